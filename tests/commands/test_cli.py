"""The CLI's contract: user errors are one line and exit code 2; --debug shows the traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from cadence.commands.cli import main

REPOSITORY = Path(__file__).resolve().parents[2]
DIGITS = REPOSITORY / "recipes" / "fsdd" / "digits.yaml"


def run(arguments: list[str], capsys) -> tuple[int, str, str]:
    code = main(arguments)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["train", "missing.yaml"], "missing.yaml: recipe file not found"),
        (["train", str(DIGITS), "trainer.max_epoch=2"], "trainer.max_epoch: unknown key (did you mean 'max_epochs'?)"),
        (["train", str(DIGITS), "optimizer.lr=fast"], "optimizer.lr:"),
        (["train", str(DIGITS), "model.name=nope"], "model.name: unknown model 'nope'"),
        (["train", str(DIGITS), "data.root=/nonexistent/fsdd"], "/nonexistent/fsdd"),
        (["data", "fsdd", "--root", "/nonexistent/fsdd", "--out", "x"], "/nonexistent/fsdd"),
        (["data", "connected-digits", "--root", "/nonexistent/fsdd", "--out", "x"], "/nonexistent/fsdd"),
        (["data", "manifest", "no_such_dir", "--out", "x.jsonl"], "no_such_dir: not a folder"),
        (["data", "check", "missing.jsonl"], "missing.jsonl: manifest not found"),
    ],
)
def test_user_errors_exit_2_with_one_line(arguments, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(arguments, capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_yaml_exits_2(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("name: [\n")
    code, _, err = run(["train", str(recipe)], capsys)
    assert code == 2 and "bad.yaml" in err and "invalid YAML" in err


def test_print_config_shows_resolved_defaults(capsys):
    code, out, _ = run(["train", str(DIGITS), "--print-config", "optimizer.lr=0.01"], capsys)
    assert code == 0
    assert "lr: 0.01" in out and "max_epochs:" in out and "weight_decay:" in out


def test_debug_flag_shows_the_traceback(capsys):
    with pytest.raises(Exception, match="recipe file not found"):
        main(["--debug", "train", "missing.yaml"])


def test_module_entry_point_and_usage_error():
    completed = subprocess.run([sys.executable, "-m", "cadence", "--help"], capture_output=True, text=True)
    assert completed.returncode == 0 and "train" in completed.stdout
    completed = subprocess.run([sys.executable, "-m", "cadence", "train"], capture_output=True, text=True)
    assert completed.returncode == 2 and "recipe" in completed.stderr


# ---------------------------------------------------------------------------- cadence data


def write_tone(path: Path, seconds: float = 0.25, sample_rate: int = 8000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    time = np.arange(round(seconds * sample_rate)) / sample_rate
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 300 * time)).astype(np.float32), sample_rate, subtype="PCM_16")
    return path


def test_data_manifest_then_check_a_clean_folder(tmp_path: Path, capsys) -> None:
    write_tone(tmp_path / "audio" / "a.wav")
    write_tone(tmp_path / "audio" / "sub" / "b.wav", seconds=0.5)
    (tmp_path / "text.tsv").write_text("a\tone\nsub/b\ttwo\n")
    manifest = tmp_path / "all.jsonl"
    code, out, _ = run(["data", "manifest", str(tmp_path / "audio"), "--out", str(manifest), "--transcripts", str(tmp_path / "text.tsv")], capsys)
    assert code == 0
    assert json.loads(out) == {"manifest": str(manifest), "utterances": 2, "with_text": 2, "hours": round(0.75 / 3600, 4)}

    code, out, err = run(["data", "check", str(manifest), "--sample-rate", "8000", "--no-resample", "--mono", "error"], capsys)
    assert code == 0
    assert json.loads(out)["clean"] is True and "2 utterances checked" in err and "no bad audio found" in err


def test_data_check_exits_1_and_names_the_bad_files(tmp_path: Path, capsys) -> None:
    good = write_tone(tmp_path / "audio" / "good.wav")
    (tmp_path / "audio" / "empty.wav").write_bytes(b"")
    write_tone(tmp_path / "audio" / "fast.wav", sample_rate=16000)
    truncated = tmp_path / "audio" / "cut.wav"
    truncated.write_bytes(good.read_bytes()[:1000])
    manifest = tmp_path / "all.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"id": name, "audio": f"audio/{name}.wav", "duration": 0.25}) + "\n"
            for name in ("good", "empty", "fast", "cut")
        )
    )
    code, out, err = run(["data", "check", str(manifest), "--sample-rate", "8000", "--no-resample"], capsys)
    assert code == 1
    summary = json.loads(out)
    assert summary["bad_by_reason"] == {"truncated": 1, "unreadable": 1, "wrong_rate": 1}
    assert {item["id"]: item["path"] for item in summary["bad_utterances"]} == {
        name: str(tmp_path / "audio" / f"{name}.wav") for name in ("empty", "fast", "cut")
    }
    assert "3 bad: truncated 1, unreadable 1, wrong_rate 1" in err
    assert f"{tmp_path / 'audio' / 'empty.wav'}: unreadable" in err
    # Resampled, the 16 kHz file is fine.
    code, out, _ = run(["data", "check", str(manifest), "--sample-rate", "8000"], capsys)
    assert code == 1 and json.loads(out)["bad_by_reason"] == {"truncated": 1, "unreadable": 1}


def test_data_manifest_names_an_unreadable_file(tmp_path: Path, capsys) -> None:
    write_tone(tmp_path / "audio" / "a.wav")
    (tmp_path / "audio" / "broken.flac").write_bytes(b"fLaC")
    code, _, err = run(["data", "manifest", str(tmp_path / "audio"), "--out", str(tmp_path / "all.jsonl")], capsys)
    assert code == 2 and "broken.flac: cannot read the audio header" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "arguments",
    [
        ["data", "check", "m.jsonl", "--mono", "left"],
        ["data", "check", "m.jsonl", "--sample-rate", "0"],
        ["data", "check", "m.jsonl", "--min-duration", "-1"],
        ["data", "connected-digits", "--sizes", "10,5"],
        ["data", "manifest", "audio"],  # --out is required
    ],
)
def test_data_usage_errors_exit_2(arguments: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(arguments)
    assert caught.value.code == 2 and "usage:" in capsys.readouterr().err


def test_data_connected_digits(fsdd_root: Path, tmp_path: Path, capsys) -> None:
    arguments = ["data", "connected-digits", "--root", str(fsdd_root), "--out", str(tmp_path / "cd"), "--sizes", "3,2,2", "--seed", "4"]
    code, out, _ = run(arguments, capsys)
    assert code == 0
    paths = json.loads(out)
    assert paths == {split: str(tmp_path / "cd" / f"{split}.jsonl") for split in ("train", "valid", "test")}
    assert json.loads((tmp_path / "cd" / "corpus.json").read_text())["parameters"]["seed"] == 4
    assert run(arguments, capsys)[:2] == (0, out)  # reused
    code, _, err = run(["data", "check", paths["train"], "--sample-rate", "8000", "--no-resample", "--mono", "error"], capsys)
    assert code == 0 and "3 utterances checked" in err
