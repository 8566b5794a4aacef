"""The CLI's contract: user errors are one line and exit code 2; --debug shows the traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cadence.cli import main

REPOSITORY = Path(__file__).resolve().parents[1]
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
