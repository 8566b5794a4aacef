"""RETURNN's ``preload_from_files``: weights from other runs, by name, never unpickled.

A recipe's ``preload:`` is a list of sources, applied in order (a later source overwrites what
an earlier one loaded). A source's ``path`` is one of:

- a cadence checkpoint folder, or an experiment (or ``checkpoints/``) folder, whose newest
  valid checkpoint is used (:func:`find_checkpoint`); the checkpoint is verified against its
  manifest, and its ``task`` entry (the task's state dict: ``model.*``, ``features.*``) is read;
- a plain ``.safetensors`` file (e.g. converted from a PyTorch ``.pt``).

Pickled files (``.pt``, ``.pth``, ``.ckpt``, ``.bin``, ``.pkl``, or any file that starts like a
zip or a pickle) are refused after reading at most their first 9 bytes: loading them could run
code. The message says how to convert one.

Names are those of the target module's ``state_dict()`` (parameters AND persistent buffers,
so batch-norm statistics travel with their weights). Per source, RETURNN's semantics:

- ``prefix``: only target names starting with it are loaded, from the source key with the
  prefix removed (``prefix: "model."`` reads a model-only file into a task);
- ``source_prefix``: put in front of that key, so one part of a model moves into another
  place (``prefix: "model.encoder.", source_prefix: "model."``: a pretrained encoder run's
  ``model.*`` into a downstream model's ``encoder``);
- ``mapping``: ``{target name: source key}``, explicit renames; they apply even outside
  ``prefix`` (RETURNN's ``var_name_mapping``);
- ``ignore_params``: globs of target names never loaded by this source (they win over ``mapping``);
- ``ignore_missing``: a selected target whose key the source lacks, or whose shape differs,
  stays as initialised (and is reported) instead of being an error;
- ``init_for_train``: true (default): the source applies only when a training run starts from
  scratch; its weights then live on in the run's own checkpoints, so resuming or evaluating
  does not read the file again. False: it applies whenever the task is built (training from
  scratch, resume, eval, transcribe), e.g. for weights that the run's checkpoints do not hold.
  Restoring a run's checkpoint after the preload still wins for what that checkpoint holds.
  :func:`preload_from_files` applies a source when ``not init_for_train or training_from_scratch``;
  a skipped source is not even read, so a resume does not need the pretrained file any more.

Every source is read and checked before any weight changes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Sequence

import pydantic
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from cadence.checkpoint.checkpointer import find_checkpoint
from cadence.checkpoint.format import MANIFEST_FILE, TENSORS_FILE, load_checkpoint
from cadence.errors import CheckpointError, ConfigError
from cadence.weights.names import STRICT, ParameterPattern, examples, listed, matches, validated

__all__ = ["PreloadReport", "PreloadSource", "SourceReport", "describe_report", "preload_from_files", "read_source"]

PICKLED_SUFFIXES = frozenset({".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar"})
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # torch.save's default format is a zip of pickles
_LARGEST_HEADER = 100_000_000  # safetensors' own limit on its JSON header


class PreloadSource(pydantic.BaseModel):
    """One entry of ``preload:`` (see the module docstring for each key)."""

    model_config = STRICT
    path: Annotated[str, pydantic.StringConstraints(min_length=1)]  # the caller resolves a relative path
    prefix: str = ""
    source_prefix: str = ""
    mapping: dict[str, str] = {}
    ignore_params: list[ParameterPattern] = []
    ignore_missing: bool = False
    init_for_train: bool = True


_SOURCES = pydantic.TypeAdapter(list[PreloadSource])


@dataclasses.dataclass
class SourceReport:
    """What one source did: ``loaded`` {target: source key}, ``left`` {target: why it stayed as
    initialised}, ``unused`` source keys nothing loaded from; ``applied`` False when skipped."""

    index: int
    path: Path
    applied: bool = True
    loaded: dict[str, str] = dataclasses.field(default_factory=dict)
    left: dict[str, str] = dataclasses.field(default_factory=dict)
    unused: list[str] = dataclasses.field(default_factory=list)

    @property
    def renamed(self) -> dict[str, str]:
        return {target: key for target, key in self.loaded.items() if target != key}


@dataclasses.dataclass
class PreloadReport:
    """All sources together: ``loaded`` {target: ``preload.<i>:source key``} (the last source
    that loaded it), ``left_initialised`` {target: why} for every other name of the module."""

    sources: list[SourceReport]
    loaded: dict[str, str]
    left_initialised: dict[str, str]


def refuse_pickled(path: Path) -> None:
    """Raise unless ``path`` looks like safetensors; reads at most 9 bytes, never unpickles."""
    conversion = (f"convert it once, in a Python you trust: state = torch.load('{path.name}', weights_only=True); "
                  "safetensors.torch.save_file({name: tensor.contiguous() for name, tensor in state.items()}, "
                  "'weights.safetensors'); then preload the .safetensors file")
    if path.suffix.lower() in PICKLED_SUFFIXES:
        raise CheckpointError(f"{path}: a {path.suffix} file is a pickle, and loading one can run code; {conversion}")
    with open(path, "rb") as file:
        head = file.read(9)
    if head.startswith(_ZIP_MAGIC) or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        raise CheckpointError(f"{path}: starts like a pickle (torch.save), and loading one can run code; {conversion}")
    # safetensors: an 8-byte little-endian header length, then the JSON header.
    if len(head) < 9 or head[8:9] != b"{" or not 0 < int.from_bytes(head[:8], "little") < _LARGEST_HEADER:
        raise CheckpointError(f"{path}: not a safetensors file nor a cadence checkpoint folder; "
                              f"if it holds PyTorch weights, {conversion}")


def read_source(path: str | Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """(the checkpoint or file read, its tensors by name), on the CPU; see the module docstring.

    >>> import tempfile; from safetensors.torch import save_file
    >>> file = Path(tempfile.mkdtemp()) / "w.safetensors"
    >>> save_file({"weight": torch.ones(2)}, str(file))
    >>> read_source(file)[1]
    {'weight': tensor([1., 1.])}
    """
    path = Path(path)
    if path.name == TENSORS_FILE and (path.parent / MANIFEST_FILE).is_file():
        path = path.parent  # a checkpoint's own tensors: read (and verify) the whole checkpoint
    if path.is_dir():
        folder = find_checkpoint(path)  # a checkpoint folder, or the newest valid one
        state, _ = load_checkpoint(folder)
        task = state.get("task")
        if not isinstance(task, dict):
            raise CheckpointError(f"checkpoint {folder}: holds no task state (it has {', '.join(map(str, state)) or 'nothing'}); "
                                  "preload reads checkpoints that a cadence Trainer saved")
        return folder, {name: tensor for name, tensor in task.items() if isinstance(tensor, torch.Tensor)}
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; give a checkpoint folder, an experiment folder or a .safetensors file")
    refuse_pickled(path)
    try:
        return path, load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: cannot be read as safetensors ({error})") from error


def preload_from_files(
    module: nn.Module, sources: Sequence[PreloadSource | dict], training_from_scratch: bool = True
) -> PreloadReport:
    """Load weights into ``module`` from each source in turn; see the module docstring.

    >>> import tempfile; from safetensors.torch import save_file
    >>> file = Path(tempfile.mkdtemp()) / "encoder.safetensors"
    >>> save_file({"weight": torch.ones(2, 3), "bias": torch.zeros(2)}, str(file))
    >>> model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    >>> report = preload_from_files(model, [{"path": str(file), "prefix": "0."}])
    >>> report.loaded, report.left_initialised
    ({'0.weight': 'preload.0:weight', '0.bias': 'preload.0:bias'}, {'1.weight': 'not selected', '1.bias': 'not selected'})
    """
    sources = validated(_SOURCES, list(sources), "preload")
    targets = {name: tensor for name, tensor in module.state_dict(keep_vars=True).items() if isinstance(tensor, torch.Tensor)}
    reports, plans = [], []
    for index, source in enumerate(sources):
        if source.init_for_train and not training_from_scratch:
            reports.append(SourceReport(index, Path(source.path), applied=False))
            continue
        path, tensors = read_source(source.path)
        report = _plan(index, source, path, targets, tensors)
        reports.append(report)
        plans.append((report, tensors))
    with torch.no_grad():  # everything checked: now the weights change
        for report, tensors in plans:
            for target, key in report.loaded.items():
                targets[target].copy_(tensors[key])  # onto the target's device and dtype
    loaded = {target: f"preload.{report.index}:{key}" for report, _ in plans for target, key in report.loaded.items()}
    left = {}
    for name in targets:
        reasons = [f"{report.left[name]} (preload.{report.index})" for report, _ in plans if name in report.left]
        if name not in loaded:
            left[name] = reasons[-1] if reasons else "not selected"
    return PreloadReport(reports, {name: loaded[name] for name in targets if name in loaded}, left)


def _plan(index: int, source: PreloadSource, path: Path, targets: dict, tensors: dict) -> SourceReport:
    """Which target loads which source key, and why the others stay; errors before any copy."""
    where = f"preload.{index}"
    for target in source.mapping:
        if target not in targets:
            raise ConfigError(f"{where}.mapping: '{target}' is not a parameter or buffer of the model; "
                              f"names look like: {examples(target, targets)}")
    for number, pattern in enumerate(source.ignore_params):
        if not any(matches(pattern, name) for name in targets):
            raise ConfigError(f"{where}.ignore_params.{number}: '{pattern}' matches no parameter or buffer; "
                              f"names look like: {examples(pattern, targets)}")
    report, problems = SourceReport(index, path), []
    for target, tensor in targets.items():
        if target in source.mapping:
            key = source.mapping[target]
        elif target.startswith(source.prefix):
            key = source.source_prefix + target[len(source.prefix):]
        else:
            continue  # outside the prefix: not this source's
        if any(matches(pattern, target) for pattern in source.ignore_params):
            report.left[target] = "ignored"
        elif key not in tensors:
            report.left[target] = (f"missing in the source as '{key}'" if key != target else "missing in the source")
        elif tensors[key].shape != tensor.shape:
            report.left[target] = f"shape {list(tensor.shape)} here, {list(tensors[key].shape)} in the source's '{key}'"
        else:
            report.loaded[target] = key
            continue
        if report.left[target] != "ignored" and not source.ignore_missing:
            problems.append(f"{target}: {report.left[target]}")
    if problems:
        raise ConfigError(f"{where}: {len(problems)} parameters cannot be loaded from {path}: {listed(problems)}. "
                          "Set ignore_missing: true to leave them as initialised, list them in ignore_params, or map "
                          f"them (mapping: {{target: source key}}); the source's keys look like: {examples('', tensors)}")
    used = set(report.loaded.values())
    report.unused = [key for key in tensors if key not in used]
    return report


def describe_report(report: PreloadReport) -> str:
    """A few log lines: per source what was loaded, renamed, left as initialised, unused.

    >>> print(describe_report(PreloadReport(
    ...     [SourceReport(0, Path("old.safetensors"), loaded={"a": "a", "b": "x"}, left={"c": "ignored"}, unused=["y"])],
    ...     {"a": "preload.0:a", "b": "preload.0:x"}, {"c": "ignored (preload.0)"})))
    preload.0 old.safetensors: 2 loaded (1 renamed), 1 left as initialised, 1 source key unused
      renamed: b <- x
      left as initialised: c (ignored)
      unused source keys: y
    """
    lines = []
    for source in report.sources:
        if not source.applied:
            lines.append(f"preload.{source.index} {source.path}: skipped (init_for_train: only when training starts from scratch)")
            continue
        lines.append(f"preload.{source.index} {source.path}: {len(source.loaded)} loaded ({len(source.renamed)} renamed), "
                     f"{len(source.left)} left as initialised, {len(source.unused)} source key{'s' * (len(source.unused) != 1)} unused")
        for label, items in (("renamed", [f"{target} <- {key}" for target, key in source.renamed.items()]),
                             ("left as initialised", [f"{target} ({why})" for target, why in source.left.items()]),
                             ("unused source keys", source.unused)):
            if items:
                lines.append(f"  {label}: {listed(items)}")
    untouched = [name for name, why in report.left_initialised.items() if why == "not selected"]
    if untouched and any(source.applied for source in report.sources):
        lines.append(f"not selected by any source (as initialised): {listed(untouched)}")
    return "\n".join(lines)
