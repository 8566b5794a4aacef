"""Values are checked where they are declared: the bounds in constructors' signatures refuse
bad values through the real path (``cadence train --print-config`` and ``cadence train``), as one
line naming the key, before any experiment folder exists; numbers refuse booleans."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Annotated, Any

import annotated_types
import pydantic
import pytest

from cadence.bounds import NOT_BOOLEAN, ODD
from cadence.checkpoint.retention import CheckpointPolicy
from cadence.commands.cli import main
from cadence.config.resolve import REGISTRIES
from cadence.registry import LABELLERS, schema_from_signature
from cadence.run_record import trainer_section_schema
from cadence.runtime.process import apply_process_settings
from cadence.trainer import Trainer

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "fsdd"
DIGITS, TDS, DS2, LAS = (RECIPES / f"{name}.yaml" for name in ("digits", "asr_tds", "asr_ds2", "asr_las"))
# Parameters whose every finite value is legitimate: they carry no bound on purpose.
UNBOUNDED = {
    ("features", "spec_augment", "mask_value"),
    ("features", "additive_noise", "snr_db"),  # decibels: a negative SNR is as legal as a positive one
    ("labeller", "prosody", "silence_db"),     # decibels relative to full scale: any level is a threshold
}


def run(arguments: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(code: int, out: str, err: str, message: str) -> None:
    assert code == 2, err
    assert out == ""
    assert err.startswith(f"cadence: error: {message}"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# (recipe, override, the one line it gives after "cadence: error: ")
REFUSED = [
    (DIGITS, "optimizer.lr=-1", "optimizer.lr: input should be greater than 0; got -1 (int)"),
    (DIGITS, "optimizer.lr=0", "optimizer.lr: input should be greater than 0; got 0 (int)"),
    (DIGITS, "model.kernel_size=4", "model.kernel_size: input should be odd; got 4 (int)"),
    (TDS, "model.kernel_size=4", "model.kernel_size: input should be odd; got 4 (int)"),
    (DIGITS, "callbacks.0.patience=0", "callbacks.0.patience: input should be greater than or equal to 1; got 0 (int)"),
    (DIGITS, "task.label_smoothing=1", "task.label_smoothing: input should be less than 1; got 1 (int)"),
    (LAS, "task.label_smoothing=1.0", "task.label_smoothing: input should be less than 1; got 1.0 (float)"),
    (DIGITS, "model.dropout=2", "model.dropout: input should be less than 1; got 2 (int)"),
    (DIGITS, "features.n_mels=0", "features.n_mels: input should be greater than or equal to 1; got 0 (int)"),
    (DIGITS, "model.channels=0", "model.channels: input should be greater than or equal to 1; got 0 (int)"),
    (DIGITS, "model.layers=0", "model.layers: input should be greater than or equal to 1; got 0 (int)"),
    (DIGITS, "scheduler.gamma=-1", "scheduler.gamma: input should be greater than 0; got -1 (int)"),
    (DIGITS, "optimizer.weight_decay=-0.01", "optimizer.weight_decay: input should be greater than or equal to 0; got -0.01 (float)"),
    (DIGITS, "optimizer.lr=.nan", "optimizer.lr: input should be a finite number; got nan (float)"),
    (DIGITS, "trainer.clip_grad_norm=.inf", "trainer.clip_grad_norm: input should be a finite number; got inf (float)"),
    (DS2, "features.2.mask_value=.nan", "features.2.mask_value: input should be a finite number; got nan (float)"),
    (DIGITS, "optimizer.betas=[0.9,1.0]", "optimizer.betas.1: input should be less than 1; got 1.0 (float)"),
    (DIGITS, "data.num_workers=-1", "data.num_workers: input should be greater than or equal to 0; got -1 (int)"),
    (DIGITS, "data.max_skip_rate=1.5", "data.max_skip_rate: input should be less than or equal to 1; got 1.5 (float)"),
    (DIGITS, "data.corpus_sizes=[10,10]", "data.corpus_sizes: list should have at least 3 items"),
    (DIGITS, "seed=-1", "seed: input should be greater than or equal to 0; got -1 (int)"),
    (DS2, "features.1.eps=0", "features.1.eps: input should be greater than 0; got 0 (int)"),
    (DS2, "features.2.time_width_ratio=2", "features.2.time_width_ratio: input should be less than or equal to 1; got 2 (int)"),
    (DS2, "model.time_kernel=4", "model.time_kernel: input should be odd; got 4 (int)"),
    (DS2, "model.lookahead=-1", "model.lookahead: input should be greater than or equal to 0; got -1 (int)"),
    (LAS, "model.location_kernel=14", "model.location_kernel: input should be odd; got 14 (int)"),
    (LAS, "task.scheduled_sampling=1.5", "task.scheduled_sampling: input should be less than or equal to 1; got 1.5 (float)"),
    (TDS, "task.decoding.beam_size=0", "task.decoding.beam_size: input should be greater than or equal to 1; got 0 (int)"),
    (TDS, "task.l2_penalty=-1", "task.l2_penalty: input should be greater than or equal to 0; got -1 (int)"),
]
REFUSED_IDS = [f"{recipe.stem}:{override}" for recipe, override, _ in REFUSED]


@pytest.mark.parametrize(("recipe", "override", "message"), REFUSED, ids=REFUSED_IDS)
def test_print_config_refuses_values_out_of_their_bounds(recipe, override, message, capsys):
    assert_refused(*run(["train", recipe, "--print-config", override], capsys), message)


@pytest.mark.parametrize(("recipe", "override", "message"), REFUSED, ids=REFUSED_IDS)
def test_train_refuses_them_before_any_folder_exists(recipe, override, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default experiment root (runs/) would be here
    folder = tmp_path / "run"
    # A corpus that is not there: were the value let through, the run would stop at the data, quickly.
    code, out, err = run(["train", recipe, override, "data.root=/nonexistent/fsdd", "--exp-dir", folder], capsys)
    assert_refused(code, out, err, message)
    assert not folder.exists() and list(tmp_path.iterdir()) == []


BOOLEANS = [
    (DIGITS, "optimizer.lr=true", "optimizer.lr: input should be a valid number, not a boolean; got True (bool)"),
    (DIGITS, "trainer.max_epochs=true", "trainer.max_epochs: input should be a valid integer, not a boolean; got True (bool)"),
    (DIGITS, "trainer.max_steps=false", "trainer.max_steps: input should be a valid integer, not a boolean; got False (bool)"),
    (DIGITS, "trainer.clip_grad_norm=true", "trainer.clip_grad_norm: input should be a valid number, not a boolean"),
    (DIGITS, "seed=true", "seed: input should be a valid integer, not a boolean; got True (bool)"),
    (DIGITS, "optimizer.betas=[true,0.9]", "optimizer.betas.0: input should be a valid number, not a boolean"),
    (DIGITS, "model.channels=true", "model.channels: input should be a valid integer, not a boolean"),
    (DIGITS, "checkpoint.keep_best=false", "checkpoint.keep_best: input should be a valid integer, not a boolean"),
    (TDS, "task.decoding.beam_size=true", "task.decoding.beam_size: input should be a valid integer, not a boolean"),
    (TDS, "task.decoding.ctc_weight=true", "task.decoding.ctc_weight: input should be a valid number, not a boolean"),
]


@pytest.mark.parametrize(("recipe", "override", "message"), BOOLEANS, ids=[override for _, override, _ in BOOLEANS])
def test_numbers_refuse_booleans(recipe, override, message, capsys):
    assert_refused(*run(["train", recipe, "--print-config", override], capsys), message)


def test_booleans_still_set_boolean_parameters_and_integers_set_floats(capsys):
    overrides = ["model.ctc_head=false", "trainer.restore_best=false", "optimizer.lr=1"]
    code, out, err = run(["train", TDS, "--print-config", *overrides], capsys)
    assert code == 0, err
    assert "ctc_head: false" in out and "restore_best: false" in out and "lr: 1.0" in out


def test_every_numeric_parameter_of_a_schema_refuses_booleans():
    def toy(
        count: int = 1, rate: float = 1.0, limit: Annotated[int, annotated_types.Ge(1)] | None = None,
        either: int | str = 1, pair: tuple[float, float] = (0.5, 0.5), sizes: list[int] = [1], flag: bool = False,
        anything: Any = None,
    ): ...

    schema = schema_from_signature(toy)
    for name in ("count", "rate", "limit", "either"):
        with pytest.raises(pydantic.ValidationError, match="not a boolean"):
            schema.model_validate({name: True})
    for name, value in (("pair", [True, 0.5]), ("sizes", [False])):
        with pytest.raises(pydantic.ValidationError, match="not a boolean"):
            schema.model_validate({name: value})
    accepted = schema.model_validate({"rate": 2, "limit": None, "either": "x", "flag": True, "anything": True})
    assert accepted.rate == 2.0 and isinstance(accepted.rate, float) and accepted.flag is True and accepted.anything is True


@pytest.mark.parametrize(
    ("recipe", "key"),
    [(DIGITS, "model.kernel_size"), (TDS, "model.kernel_size"), (DS2, "model.time_kernel"), (DS2, "model.frequency_kernel"),
     (LAS, "model.location_kernel")],
)
def test_kernels_are_odd(recipe, key, capsys):
    for size in (1, 3, 7):
        code, out, err = run(["train", recipe, "--print-config", f"{key}={size}"], capsys)
        assert code == 0 and f"{key.split('.')[-1]}: {size}\n" in out, err
    for size in (2, 6):
        code, out, err = run(["train", recipe, "--print-config", f"{key}={size}"], capsys)
        assert_refused(code, out, err, f"{key}: input should be odd; got {size} (int)")


@pytest.mark.parametrize(
    "override",
    ["scheduler.gamma=1.5", "optimizer.weight_decay=0", "task.label_smoothing=0", "callbacks.0.patience=1",
     "model.dropout=0", "data.num_workers=0", "data.max_skip_rate=1", "optimizer.betas=[0,0.5]", "seed=0"],
)
def test_legitimate_edge_values_pass(override, capsys):
    code, _, err = run(["train", DIGITS, "--print-config", override], capsys)
    assert code == 0, err


@pytest.mark.parametrize("recipe", sorted(RECIPES.parent.rglob("*.yaml")), ids=lambda path: f"{path.parent.name}/{path.name}")
def test_every_shipped_recipe_resolves(recipe, capsys):
    code, out, err = run(["train", recipe, "--print-config"], capsys)
    assert code == 0 and err == "" and "model:" in out


def numeric_parameters():
    """(where, parameter, annotation) of every int or float parameter a recipe can set."""
    callables = {  # where -> (callable, the parameters cadence passes itself); cadence's own, not other tests'
        f"{section}.{name}": (registry.get(name), registry.injected)
        for section, registry in REGISTRIES.items() for name in registry.names()
        if registry.get(name).__module__.startswith("cadence.")
    }
    callables.update(trainer=(Trainer, ()), process=(apply_process_settings, ()), checkpoint=(CheckpointPolicy, ()))
    # Labellers are set inside a PASE task's workers, not in a section of their own.
    callables.update({f"labeller.{name}": (LABELLERS.get(name), LABELLERS.injected) for name in LABELLERS.names()
                      if LABELLERS.get(name).__module__.startswith("cadence.")})
    for where, (factory, injected) in callables.items():
        target = factory.__init__ if inspect.isclass(factory) else factory
        hints = typing.get_type_hints(target, include_extras=True)
        for parameter in inspect.signature(factory).parameters:
            annotation = hints.get(parameter)
            if parameter in injected:
                continue
            if any(leaf in (int, float) for leaf, _ in number_leaves(annotation)):
                yield where, parameter, annotation


def number_leaves(annotation: Any) -> list[tuple[Any, tuple]]:
    """Each number type in ``annotation`` (in unions, containers) with its Annotated metadata."""
    if typing.get_origin(annotation) is Annotated:
        base = annotation.__origin__
        if base in (int, float):
            return [(base, annotation.__metadata__)]
        return number_leaves(base)
    if annotation in (int, float):
        return [(annotation, ())]
    return [leaf for argument in typing.get_args(annotation) for leaf in number_leaves(argument)]


def test_every_numeric_parameter_is_bounded():
    # A new component, or a new parameter, that forgets its bounds fails here: give it the bound
    # its meaning implies (cadence.bounds), or list it in UNBOUNDED when every value is legal.
    found = list(numeric_parameters())
    assert len(found) > 100  # every registry was walked
    missing = []
    for where, parameter, annotation in found:
        section, _, name = where.partition(".")
        if (section, name, parameter) in UNBOUNDED:
            continue
        for _, metadata in number_leaves(annotation):
            if not any(isinstance(item, annotated_types.BaseMetadata) for item in metadata):
                missing.append(f"{where}.{parameter}")
    assert missing == []


def test_odd_and_not_boolean_read_well_alone():
    odd = pydantic.TypeAdapter(Annotated[int, ODD])
    assert odd.validate_python(3) == 3
    with pytest.raises(pydantic.ValidationError, match="Input should be odd"):
        odd.validate_python(-2)
    number = pydantic.TypeAdapter(Annotated[float, NOT_BOOLEAN])
    assert number.validate_python(2) == 2.0
    with pytest.raises(pydantic.ValidationError, match="Input should be a valid number, not a boolean"):
        number.validate_python(False)
