"""``cadence report``: a page of real FSDD runs, opened in a real headless browser (Chromium from
the distribution's packages; ``make test`` installs it), every figure loaded, no console error."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cadence.commands.cli import main
from cadence.errors import ConfigError
from cadence.commands.report import write_report

REPOSITORY = Path(__file__).resolve().parents[2]
RECIPES = REPOSITORY / "recipes" / "fsdd"
DS2 = ["asr_ds2.yaml", "data.corpus_sizes=[60,12,12]", "data.batching.max_frames=6000", "trainer.max_epochs=2",
       "trainer.validate_every_steps=2", "trainer.train_metrics_every=1", "model.rnn_hidden=24", "model.rnn_layers=1",
       "model.conv_channels=4"]
DIGITS = ["digits.yaml", "data.max_train_utterances=48", "data.max_eval_utterances=16", "trainer.max_epochs=2",
          "metrics=[accuracy, confusion_matrix]"]


def train(folder: Path, recipe: str, *overrides: str) -> Path:
    assert main(["train", str(RECIPES / recipe), *overrides, "trainer.progress_bar=false", "--exp-dir", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def ds2_run(tmp_path_factory, fsdd_root) -> Path:
    return train(tmp_path_factory.mktemp("report") / "ds2", *DS2)


def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "no Chromium: `make test` installs it (apt-get install chromium)"
    return found


def open_in_browser(page: Path, screenshot: Path) -> tuple[str, str]:
    """The page's title once loaded, and what the browser logged (console messages included);
    a screenshot of it in ``screenshot``."""
    common = [browser(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]
    dumped = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    shot = subprocess.run([*common, "--window-size=1200,3000", f"--screenshot={screenshot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and screenshot.stat().st_size > 20_000, shot.stderr[-2000:]
    title = re.search(r"<title>(.*?)</title>", dumped.stdout, re.S).group(1)
    return title, dumped.stderr


def console_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if "CONSOLE" in line]


def test_a_speech_recognition_report_loads_every_figure_in_a_headless_browser(ds2_run, tmp_path, capsys):
    out = tmp_path / "report"
    capsys.readouterr()
    assert main(["report", str(ds2_run), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    page = Path(printed["report"])
    figures = sorted((out / "figures").glob("*.png"))
    assert [str(path) for path in figures] == printed["figures"]
    names = {path.stem for path in figures}
    assert {"curve-loss", "curve-wer", "curve-cer", "settings", "validation-history", "wer-by-length"} <= names
    text = page.read_text()
    # Self-contained: no address anywhere, no script or style from elsewhere.
    assert "http://" not in text and "https://" not in text and "<script src" not in text and "<link" not in text
    # The worst test utterance is shown with its reference and hypothesis.
    records = [json.loads(line) for line in (ds2_run / "hypotheses" / "test.jsonl").read_text().splitlines()]
    worst = max(records, key=lambda record: (record["word_errors"] / record["reference_words"], -int(record["id"].split("-")[-1])))
    assert f"<td>{worst['reference']}</td>" in text
    screenshot = tmp_path / "report.png"  # the README describes this page
    title, log = open_in_browser(page, screenshot)
    assert title.endswith(f"figures loaded: {len(figures)} of {len(figures)}"), title
    assert not console_errors(log), console_errors(log)


def test_a_figure_that_does_not_load_is_caught_by_the_browser_check(ds2_run, tmp_path):
    page = write_report([ds2_run], tmp_path / "report")
    text = page.read_text()
    broken = re.sub(r'src="data:image/png;base64,[^"]{40}', 'src="data:image/png;base64,AAAA', text, count=1)
    assert broken != text
    page.write_text(broken)
    title, log = open_in_browser(page, tmp_path / "broken.png")
    figures = len(list((tmp_path / "report" / "figures").glob("*.png")))
    assert title.endswith(f"figures loaded: {figures - 1} of {figures}") and len(console_errors(log)) == 1


def test_two_runs_overlaid_with_their_confusion_matrices_and_config_differences(tmp_path, fsdd_root):
    first = train(tmp_path / "a", *DIGITS)
    second = train(tmp_path / "b", *DIGITS, "optimizer.lr=1e-3")
    page = write_report([first, second], tmp_path / "both")
    text = page.read_text()
    names = {path.stem for path in (tmp_path / "both" / "figures").glob("*.png")}
    # The runs share a name: each is told apart by its folder.
    assert {"confusion-fsdd-digits--a--ConfusionMatrix", "confusion-fsdd-digits--b--ConfusionMatrix", "curve-accuracy"} <= names
    assert "<td>optimizer.lr</td><td>0.003</td><td>0.001</td>" in text
    assert text.count("fsdd-digits (a)") >= 2 and "No utterance was quarantined." in text


def test_a_report_needs_run_folders_and_an_out_folder_for_several(tmp_path, ds2_run):
    with pytest.raises(ConfigError, match="not a run folder"):
        write_report([tmp_path])
    with pytest.raises(ConfigError, match="needs --out"):
        write_report([ds2_run, ds2_run])
