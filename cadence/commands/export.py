"""``cadence export EXP_DIR --format torchscript|onnx``: a trained model for use outside Python's
cadence, its feature front-end included.

What is written to ``--out`` (default ``EXP_DIR/export``):

- ``model.pt`` (TorchScript, ``torch.jit.load``) or ``model.onnx`` (ONNX, onnxruntime): inputs
  ``waveforms`` float32 ``[B, samples]`` at the model's rate, zero-padded, and ``lengths``
  int64 ``[B]`` (samples); outputs, for classification, ``logits`` ``[B, classes]``; for CTC,
  ``log_probs`` ``[B, frames, classes]`` (class 0 is the blank, class k is token k - 1) and
  ``output_lengths`` ``[B]``;
- ``labels.json`` (the class names) or ``tokenizer.json`` (token ids to text);
- ``export.json``: the format, the inputs and outputs, the sample rate, the checkpoint it came
  from, and the largest difference found when the export was checked against the model.

Every export is checked before it is kept: the written file is loaded back and run on a
batch other than the one it was traced with (other utterance count and lengths); outputs that
differ from the PyTorch model's by more than ``TOLERANCE`` are an error, and nothing is kept.

ONNX: the feature front-end (an STFT) goes through ``torch.export``; the recurrent layers
(which ``torch.export`` fixes to the traced batch's shape) through the TorchScript-based
exporter; the two graphs are joined into one. A recurrent layer reads the padded batch without
a PackedSequence there (:func:`cadence.models.recurrent.run_recurrent`: the same outputs).

Sequence-to-sequence tasks (LAS, TDS) decode step by step with attention, a loop this does
not export; they are refused, as are tasks without a feature front-end.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from cadence.checkpoint.checkpointer import find_best_checkpoint
from cadence.commands.inference import feature_sample_rate
from cadence.config.rebuild import load
from cadence.errors import ConfigError
from cadence.runtime.files import strict_json, write_bytes_atomic
from cadence.tasks.classification import ClassificationTask
from cadence.tasks.ctc import CTCTask
from cadence.tasks.framewise import FramewiseTask

Format = Literal["torchscript", "onnx"]
TOLERANCE = 1e-4  # float32, after an STFT and several layers: rounding, not a different model
OPSET = 18


class Inference(nn.Module):
    """The task's feature front-end and model as one module: ``(waveforms, lengths)`` to
    ``logits`` (classification) or ``(log_probs, output_lengths)`` (CTC)."""

    def __init__(self, task: nn.Module):
        super().__init__()
        self.features, self.model = task.features, task.model
        self.ctc = isinstance(task, CTCTask)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> Any:
        features, frame_lengths = self.features(waveforms, lengths)
        return self.head(features, frame_lengths)

    def head(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> Any:
        if not self.ctc:
            return self.model(features, frame_lengths)  # [B, classes]
        logits, output_lengths = self.model(features, frame_lengths)
        return F.log_softmax(logits.float(), dim=-1), output_lengths  # [B, T, classes], [B]


class Head(nn.Module):
    """The model part of :class:`Inference` alone (features in), for ONNX's second graph."""

    def __init__(self, inference: Inference):
        super().__init__()
        self.inference = inference

    def forward(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> Any:
        return self.inference.head(features, frame_lengths)


def exportable(task: nn.Module, where: Path) -> Inference:
    """The task as an :class:`Inference` module in eval mode, or a ConfigError saying why not."""
    if isinstance(task, FramewiseTask) or not isinstance(task, (ClassificationTask, CTCTask)):
        raise ConfigError(f"{where}: cadence export takes classification and CTC tasks; {type(task).__name__} is not "
                          "one (a sequence-to-sequence task decodes step by step, which is not exported)")
    if getattr(task, "features", None) is None:
        raise ConfigError(f"{where}: the task has no feature front-end (features:), so there is nothing that takes audio to export")
    for module in task.modules():
        if hasattr(module, "packed_sequences"):
            module.packed_sequences = False  # traceable; the same outputs (cadence.models.recurrent)
    return Inference(task).eval()


def example_batches(sample_rate: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """One batch to trace with, and another (other count and lengths) to check the export on."""
    generator = torch.Generator().manual_seed(0)
    traced = torch.randn(3, sample_rate, generator=generator) * 0.1, torch.tensor([sample_rate, sample_rate * 3 // 4, sample_rate // 2])
    samples = sample_rate * 3 // 2
    checked = torch.randn(2, samples, generator=generator) * 0.1, torch.tensor([samples, samples * 2 // 3])
    return traced, checked


def export_model(checkpoint: str | Path, format: Format, out: str | Path | None = None, trust_code: bool = False) -> dict[str, Any]:
    """Export the run's best model (or the given checkpoint's); the ``export.json`` record back."""
    if format not in ("torchscript", "onnx"):
        raise ConfigError(f"--format must be torchscript or onnx, got {format!r}")
    checkpoint = Path(checkpoint)
    source = find_best_checkpoint(checkpoint) if (checkpoint / "checkpoints").is_dir() else checkpoint
    task = load(source, trust_code=trust_code)
    inference = exportable(task, checkpoint)
    sample_rate = feature_sample_rate(task)
    traced, checked = example_batches(sample_rate)
    directory = Path(out) if out is not None else (checkpoint if (checkpoint / "checkpoints").is_dir() else checkpoint.parent.parent) / "export"
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".export-") as scratch:
        name = "model.pt" if format == "torchscript" else "model.onnx"
        written = Path(scratch) / name
        with torch.no_grad():
            if format == "torchscript":
                _torchscript(inference, traced, written)
                difference = _check(inference, checked, lambda *inputs: torch.jit.load(str(written))(*inputs))
            else:
                _onnx(inference, traced, written, Path(scratch))
                difference = _check(inference, checked, _onnxruntime_runner(written))
        shutil.move(str(written), directory / name)  # only a checked export is kept
    outputs = ["log_probs", "output_lengths"] if inference.ctc else ["logits"]
    record = {
        "format": format, "file": name, "task": type(task).__name__, "sample_rate": sample_rate,
        "inputs": {"waveforms": "float32 [batch, samples], zero-padded", "lengths": "int64 [batch], samples"},
        "outputs": ({"log_probs": "float32 [batch, frames, classes]; class 0 is the CTC blank, class k is token k - 1",
                     "output_lengths": "int64 [batch], frames"} if inference.ctc else {"logits": "float32 [batch, classes]"}),
        "output_names": outputs, "checkpoint": str(source), "max_difference_checked": difference, "tolerance": TOLERANCE,
    }
    _write_vocabulary(task, directory, record)
    write_bytes_atomic(directory / "export.json", (strict_json(record, indent=2) + "\n").encode("utf-8"))
    return {**record, "directory": str(directory)}


def _torchscript(inference: Inference, batch: tuple[torch.Tensor, torch.Tensor], path: Path) -> None:
    # Traced, not scripted: the models are plain PyTorch with no Python control flow on values
    # (lengths act through masks), and tracing needs no TorchScript annotations from them.
    traced = torch.jit.trace(inference, batch, check_trace=False)
    traced.save(str(path))


def _onnx(inference: Inference, batch: tuple[torch.Tensor, torch.Tensor], path: Path, scratch: Path) -> None:
    import onnx  # the export extra

    # Each wrapper in eval mode: the TorchScript-based exporter sets the module it was given back
    # to that module's mode afterwards, children included, and torch.export traces a module in
    # its mode (a wrapper left training would bring SpecAugment and batch statistics along).
    waveforms, lengths = batch
    features, frame_lengths = inference.features(waveforms, lengths)
    utterances = torch.export.Dim("batch", min=1, max=1024)
    # From a tenth of the traced second (longer than any STFT window) to an hour.
    samples = torch.export.Dim("samples", min=waveforms.shape[1] // 10, max=waveforms.shape[1] * 3600)
    front = scratch / "features.onnx"
    torch.onnx.export(inference.features.eval(), (waveforms, lengths), str(front), dynamo=True, opset_version=OPSET,
                      dynamic_shapes=({0: utterances, 1: samples}, {0: utterances}),
                      input_names=["waveforms", "lengths"], output_names=["features", "frame_lengths"], verbose=False)
    outputs = ["log_probs", "output_lengths"] if inference.ctc else ["logits"]
    axes = {"features": {0: "batch", 2: "frames"}, "frame_lengths": {0: "batch"}, outputs[0]: {0: "batch"}}
    if inference.ctc:
        axes.update({"log_probs": {0: "batch", 1: "output_frames"}, "output_lengths": {0: "batch"}})
    back = scratch / "head.onnx"
    torch.onnx.export(Head(inference).eval(), (features, frame_lengths), str(back), dynamo=False, opset_version=OPSET,
                      input_names=["features", "frame_lengths"], output_names=outputs, dynamic_axes=axes)
    first, second = onnx.load(str(front)), onnx.load(str(back))
    second.ir_version = first.ir_version  # the two exporters stamp different IR versions of the same opset
    joined = onnx.compose.merge_models(first, second, io_map=[("features", "features"), ("frame_lengths", "frame_lengths")])
    onnx.checker.check_model(joined)
    onnx.save(joined, str(path))


def _onnxruntime_runner(path: Path):
    import onnxruntime  # the export extra

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = session.run(None, {"waveforms": waveforms.numpy(), "lengths": lengths.numpy()})
        return tuple(torch.from_numpy(output) for output in outputs)

    return run


def _check(inference: Inference, batch: tuple[torch.Tensor, torch.Tensor], exported) -> float:
    """The largest difference between the exported model's outputs and the PyTorch model's on
    ``batch``; a ConfigError (nothing kept) beyond :data:`TOLERANCE` or on another shape."""
    inference.eval()  # the model as it is used, whatever mode an exporter left it in
    expected = inference(*batch)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = exported(*batch)
    got = got if isinstance(got, tuple) else (got,)
    difference = 0.0
    for name, one, other in zip(("first", "second"), expected, got):
        if tuple(one.shape) != tuple(other.shape):
            raise ConfigError(f"the exported model's {name} output has shape {tuple(other.shape)} on a new batch, "
                              f"the model's {tuple(one.shape)}: it does not export faithfully")
        difference = max(difference, float((one.double() - other.double()).abs().max()))
    if not difference <= TOLERANCE:
        raise ConfigError(f"the exported model's outputs differ from the model's by {difference:.3g} (more than "
                          f"{TOLERANCE}) on a new batch: it does not export faithfully")
    return difference


def _write_vocabulary(task: nn.Module, directory: Path, record: dict[str, Any]) -> None:
    """``labels.json`` (class names) or ``tokenizer.json`` beside the model."""
    tokenizer = getattr(task, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.save(directory / "tokenizer.json")
        record["vocabulary"] = "tokenizer.json"
        return
    # The class names are a fact of the data, which the resolved config holds where a component
    # takes them (the metrics); without them, the class indices.
    config = getattr(task, "config", None) or {}
    names = next((metric["class_names"] for metric in config.get("metrics") or []
                  if isinstance(metric, dict) and metric.get("class_names")), None)
    classes = (config.get("model") or {}).get("num_classes")
    if names is None and isinstance(classes, int):
        names = [str(index) for index in range(classes)]
    if names is not None:
        write_bytes_atomic(directory / "labels.json", (json.dumps(list(names), ensure_ascii=False) + "\n").encode("utf-8"))
        record["vocabulary"] = "labels.json"
