from __future__ import annotations

from pathlib import Path

import pytest

from cadence.config.resolve import resolve
from cadence.config.schema import apply_overrides, load_recipe, parse_override, validate_recipe
from cadence.errors import ConfigError

BASE = {
    "name": "demo",
    "data": {"name": "fsdd", "task": "digits"},
    "features": {"name": "log_mel", "n_mels": 40},
    "model": {"name": "cnn_classifier"},
    "optimizer": {"name": "adamw", "lr": 0.003},
    "callbacks": [{"name": "early_stopping", "patience": 3}],
}


def resolved(overrides: list[str]) -> dict:
    return resolve(validate_recipe(apply_overrides(BASE, overrides))).to_dict()


def test_overrides_are_yaml_typed_and_dotted():
    recipe = apply_overrides(BASE, ["optimizer.lr=1e-2", "trainer.max_epochs=4", "data.root=null", "callbacks.0.patience=7"])
    assert recipe["optimizer"]["lr"] == 0.01
    assert recipe["trainer"] == {"max_epochs": 4}
    assert recipe["data"]["root"] is None
    assert recipe["callbacks"][0]["patience"] == 7
    assert BASE["optimizer"]["lr"] == 0.003  # the original is untouched


@pytest.mark.parametrize("text", ["novalue", "=3", "a..b=1", "callbacks.5.patience=1"])
def test_malformed_overrides_are_rejected(text):
    with pytest.raises(ConfigError, match="override"):
        apply_overrides(BASE, [text]) if "callbacks" in text else parse_override(text)


def test_unknown_top_level_key_names_path_and_suggestion():
    with pytest.raises(ConfigError, match=r"trainer\.max_epoch: unknown key \(did you mean 'max_epochs'\?\)"):
        resolved(["trainer.max_epoch=3"])


def test_unknown_component_key_names_full_path_and_suggestion():
    with pytest.raises(ConfigError, match=r"optimizer\.weight_decy: unknown key \(did you mean 'weight_decay'\?\)"):
        resolved(["optimizer.weight_decy=0.1"])
    with pytest.raises(ConfigError, match=r"callbacks\.0\.patiense: unknown key \(did you mean 'patience'\?\)"):
        resolved(["callbacks.0.patiense=2"])


def test_wrong_type_names_key_expected_type_and_value():
    with pytest.raises(ConfigError) as caught:
        resolved(["optimizer.lr=fast"])
    message = str(caught.value)
    assert "optimizer.lr" in message and "valid number" in message and "'fast'" in message
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs: .*integer.*'many'"):
        resolved(["trainer.max_epochs=many"])


def test_unknown_component_name_suggests_registered_one():
    with pytest.raises(ConfigError, match=r"model\.name: unknown model 'cnn_clasifier' \(did you mean 'cnn_classifier'\?\)"):
        resolved(["model.name=cnn_clasifier"])


def test_resolve_fills_component_defaults():
    config = resolved([])
    assert config["optimizer"]["weight_decay"] == 0.01  # adamw's default, made explicit
    assert config["callbacks"][0]["min_delta"] == 0.0
    assert config["trainer"]["max_epochs"] == 10


def test_recipe_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nmodel: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+: invalid YAML"):
        load_recipe(broken)
    python_tag = tmp_path / "tag.yaml"
    python_tag.write_text("name: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_recipe(python_tag)
    assert not (tmp_path / "pwned").exists()


def test_a_component_parameter_called_name_is_refused_with_the_fix():
    from cadence.registry import schema_from_signature

    class Prefixed:
        def __init__(self, name: str | None = None): ...

    with pytest.raises(TypeError, match="parameter called 'name'.*rename the parameter"):
        schema_from_signature(Prefixed)


def test_a_resolved_text_recipe_validates_again():
    # What a checkpoint stores must load back: every component keeps its registered name.
    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "fsdd" / "asr_las.yaml")
    resolved = resolve(recipe).to_dict()
    assert [metric["name"] for metric in resolved["metrics"]] == ["wer", "cer"]
    assert validate_recipe(resolved).task.name == "seq2seq"


def test_experiment_loggers_are_named_checked_and_resolved():
    assert resolved([])["experiment"]["loggers"] == [{"name": "tensorboard"}]  # the default
    assert resolved(["experiment.loggers=[tensorboard, csv]"])["experiment"]["loggers"] == [
        {"name": "tensorboard"}, {"name": "csv", "file": "metrics.csv"}]  # a logger's defaults filled in
    with pytest.raises(ConfigError, match=r"experiment\.loggers\.1\.name: unknown experiment logger 'mlflw' \(did you mean 'mlflow'\?\)"):
        resolved(["experiment.loggers=[tensorboard, mlflw]"])
    with pytest.raises(ConfigError, match=r"experiment\.loggers\.0\.fil: unknown key \(did you mean 'file'\?\)"):
        resolved(["experiment.loggers=[{name: csv, fil: x.csv}]"])
    with pytest.raises(ConfigError, match="tensorboard takes no options"):
        resolved(["experiment.loggers=[{name: tensorboard, every: 2}]"])


@pytest.mark.parametrize(("overrides", "loggers"), [
    (["experiment.tensorboard=false"], []),
    (["experiment.tensorboard=false", "experiment.loggers=[tensorboard, csv]"], ["csv"]),
    (["experiment.tensorboard=true", "experiment.loggers=[csv]"], ["tensorboard", "csv"]),
])
def test_the_older_tensorboard_switch_folds_into_loggers(overrides, loggers):
    # Recipes and checkpoints from before experiment.loggers still load; loggers alone then says.
    experiment = resolved(overrides)["experiment"]
    assert [logger["name"] for logger in experiment["loggers"]] == loggers and "tensorboard" not in experiment
