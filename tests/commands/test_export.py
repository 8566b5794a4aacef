"""``cadence export``: TorchScript and ONNX models, feature front-end included, whose outputs on
real FSDD audio equal those of the model ``cadence.load`` gives."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime  # the export extra, part of the test extra
import pytest
import torch
from torch.nn import functional as F

import cadence
from cadence.commands import export
from cadence.commands.cli import main
from cadence.data.audio import load_audio
from cadence.data.tokenizers import load_tokenizer
from cadence.errors import ConfigError

REPOSITORY = Path(__file__).resolve().parents[2]
RECIPES = REPOSITORY / "recipes" / "fsdd"
RUNS = {
    "digits": ["digits.yaml", "data.max_train_utterances=48", "data.max_eval_utterances=8", "trainer.max_epochs=1"],
    "ds2": ["asr_ds2.yaml", "data.corpus_sizes=[40,8,8]", "trainer.max_epochs=1", "model.rnn_hidden=24", "model.rnn_layers=2",
            "model.conv_channels=4"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fsdd_root) -> dict[str, Path]:
    folders = {}
    for name, (recipe, *overrides) in RUNS.items():
        folder = tmp_path_factory.mktemp("export") / name
        assert main(["train", str(RECIPES / recipe), *overrides, "trainer.progress_bar=false", "--exp-dir", str(folder)]) == 0
        folders[name] = folder
    return folders


def fsdd_batch(fsdd_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Five real recordings of different lengths, zero-padded into one batch."""
    files = sorted((fsdd_root / "recordings").glob("*.wav"))[::600][:5]
    waveforms = [load_audio(file, 8000) for file in files]
    lengths = torch.tensor([waveform.shape[-1] for waveform in waveforms])
    padded = torch.zeros(len(waveforms), int(lengths.max()))
    for row, waveform in enumerate(waveforms):
        padded[row, : waveform.shape[-1]] = waveform
    assert len(set(lengths.tolist())) == len(files)  # each its own length: padding is exercised
    return padded, lengths


@torch.no_grad()
def loaded_outputs(folder: Path, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What the model cadence.load rebuilds gives: its features, then its model."""
    task = cadence.load(folder)
    features, frame_lengths = task.features(waveforms, lengths)
    if not hasattr(task, "tokenizer"):
        return (task.model(features, frame_lengths),)
    logits, output_lengths = task.model(features, frame_lengths)
    return F.log_softmax(logits.float(), dim=-1), output_lengths


def exported_outputs(folder: Path, form: str, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if form == "torchscript":
        outputs = torch.jit.load(str(folder / "model.pt"))(waveforms, lengths)
        return outputs if isinstance(outputs, tuple) else (outputs,)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return tuple(torch.from_numpy(output) for output in session.run(None, {"waveforms": waveforms.numpy(), "lengths": lengths.numpy()}))


@pytest.mark.parametrize("form", ["torchscript", "onnx"])
@pytest.mark.parametrize("run", ["digits", "ds2"])
def test_the_exported_model_gives_the_loaded_models_outputs_on_real_audio(runs, run, form, fsdd_root, tmp_path, capsys):
    out = tmp_path / "exported"
    capsys.readouterr()
    assert main(["export", str(runs[run]), "--format", form, "--out", str(out)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record == {**json.loads((out / "export.json").read_text()), "directory": str(out)}
    waveforms, lengths = fsdd_batch(fsdd_root)
    expected, got = loaded_outputs(runs[run], waveforms, lengths), exported_outputs(out, form, waveforms, lengths)
    assert [tuple(one.shape) for one in got] == [tuple(one.shape) for one in expected]
    for one, other in zip(expected, got):
        torch.testing.assert_close(other, one, rtol=0, atol=1e-4, check_dtype=False)
    assert record["output_names"] == (["log_probs", "output_lengths"] if run == "ds2" else ["logits"])
    if run == "digits":  # the class names beside the model, in the order of its outputs
        assert json.loads((out / "labels.json").read_text())[:3] == ["zero", "one", "two"]
    else:  # the tokenizer turns the greedy path into the words cadence transcribe prints
        tokenizer = load_tokenizer(out / "tokenizer.json")
        best = got[0][0, : int(got[1][0])].argmax(-1).tolist()
        tokens = [token - 1 for index, token in enumerate(best) if token != 0 and (index == 0 or token != best[index - 1])]
        assert tokenizer.decode(tokens) == cadence.load(runs["ds2"]).transcribe(waveforms[:1, : int(lengths[0])], lengths[:1])[0]


def test_an_export_that_does_not_match_the_model_is_refused_and_nothing_is_kept(runs, tmp_path, monkeypatch):
    real_runner = export._onnxruntime_runner

    def off_by_a_little(path):
        run = real_runner(path)
        return lambda *inputs: tuple(output + 1e-3 for output in run(*inputs))

    monkeypatch.setattr(export, "_onnxruntime_runner", off_by_a_little)
    with pytest.raises(ConfigError, match="differ from the model's by 0.001"):
        export.export_model(runs["digits"], "onnx", tmp_path / "out")
    assert not (tmp_path / "out" / "model.onnx").exists() and not list((tmp_path / "out").glob(".export-*"))


def test_a_task_that_is_not_classification_or_ctc_is_refused():
    with pytest.raises(ConfigError, match="classification and CTC tasks; Linear is not"):
        export.exportable(torch.nn.Linear(2, 2), Path("run"))
