"""``cadence ls`` and ``cadence compare`` on run folders, and the run status they read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cadence.commands.cli import main
from cadence.commands.runs import compare_runs, list_runs
from cadence.run_status import mark_ended, mark_running, read_status, release


def make_run(directory: Path, name: str, lr: float, accuracy: float | None = None, status: str | None = "finished") -> Path:
    """A run folder as cadence leaves it: config, hash, status and (when finished) results."""
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(yaml.safe_dump({"name": name, "optimizer": {"name": "adamw", "lr": lr},
                                                           "trainer": {"monitor": "val/accuracy"}}))
    (directory / "config.sha256").write_text(f"{name:0<64}\n")
    if status == "finished":
        results = {"monitor": "val/accuracy", "best_value": accuracy, "best_epoch": 3, "wall_time_s": 125.0,
                   "best_validation": {"val/accuracy": accuracy, "val/loss": 0.5}, "test": {"test/accuracy": accuracy - 0.01}}
        (directory / "results.json").write_text(json.dumps(results))
    if status is not None:
        release(mark_running(directory))
        if status != "running":
            mark_ended(directory, status)
    return directory


def test_ls_lists_every_run_with_its_status_best_and_test_figures(tmp_path, capsys):
    make_run(tmp_path / "a", "first", 1e-3, accuracy=0.9)
    make_run(tmp_path / "group" / "b", "second", 2e-3, accuracy=0.8)
    make_run(tmp_path / "killed", "third", 3e-3, status="running")  # marked running, lock gone: killed
    stopped = make_run(tmp_path / "stopped", "fourth", 3e-3, status="stopped")
    (stopped / "checkpoints").mkdir()  # a run's own subfolders are not searched for runs
    (stopped / "checkpoints" / "results.json").write_text("{}")
    old = tmp_path / "old"  # a run made before cadence kept a status: finished by its results
    old.mkdir()
    (old / "results.json").write_text(json.dumps({"best_value": 0.7, "monitor": "val/accuracy", "best_epoch": 1}))
    (tmp_path / "not-a-run").mkdir()
    live = make_run(tmp_path / "live", "fifth", 1e-3, status=None)
    lock = mark_running(live)  # held by this process: running
    try:
        summaries = {Path(summary["run"]).name: summary for summary in list_runs(tmp_path)}
        assert sorted(summaries) == ["a", "b", "killed", "live", "old", "stopped"]
        assert {name: summary["status"] for name, summary in summaries.items()} == {
            "a": "finished", "b": "finished", "killed": "crashed", "live": "running", "old": "finished", "stopped": "stopped"}
        assert summaries["a"]["best_value"] == 0.9 and summaries["a"]["test_metric"] == "test/accuracy"
        assert summaries["a"]["test_value"] == pytest.approx(0.89) and summaries["a"]["config_sha256"] == "first0000000"
        assert summaries["killed"]["note"] == "the process ended without a word (killed?)"

        assert main(["ls", str(tmp_path)]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split() == ["run", "name", "started", "status", "best", "test", "wall", "config"]
        row = next(line for line in table if line.startswith("group/b "))
        assert "second" in row and "finished" in row and "val/accuracy 0.8 (epoch 3)" in row and "test/accuracy 0.79" in row
        assert "2.1 min" in row and "second000000" in row

        assert main(["ls", str(tmp_path), "--json"]) == 0
        assert [summary["name"] for summary in json.loads(capsys.readouterr().out)] == [
            summary["name"] for summary in list_runs(tmp_path)]
    finally:
        release(lock)


def test_a_process_killed_outright_reads_as_crashed(tmp_path):
    marker = tmp_path / "marked"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from cadence.run_status import mark_running; "
        "lock = mark_running(Path(sys.argv[1])); Path(sys.argv[2]).touch(); time.sleep(60)"), str(tmp_path), str(marker)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline and holder.poll() is None, "the process never marked the run"
            time.sleep(0.02)
        assert read_status(tmp_path)["status"] == "running" and read_status(tmp_path)["pid"] == holder.pid
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert read_status(tmp_path)["status"] == "crashed"


def test_compare_puts_runs_side_by_side_with_the_config_keys_that_differ(tmp_path, capsys):
    first = make_run(tmp_path / "first", "digits", 1e-3, accuracy=0.9)
    second = make_run(tmp_path / "second", "digits", 3e-3, accuracy=0.8)
    comparison = compare_runs([first, second])
    assert comparison["config_differences"] == {"optimizer.lr": [1e-3, 3e-3]}  # the name, the rest: the same
    assert comparison["figures"]["val/accuracy"] == [0.9, 0.8]
    assert comparison["figures"]["test/accuracy"] == pytest.approx([0.89, 0.79])
    assert main(["compare", str(first), str(second)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["first", "second"]
    assert next(line for line in lines if line.startswith("  optimizer.lr")).split() == ["optimizer.lr", "0.001", "0.003"]
    assert next(line for line in lines if line.startswith("wall time")).split() == ["wall", "time", "2.1", "min", "2.1", "min"]


def test_a_damaged_or_hostile_folder_shows_dashes_and_runs_nothing(tmp_path, capsys):
    run = tmp_path / "given"
    run.mkdir()
    payload = tmp_path / "ran"
    (run / "config.yaml").write_text(f"!!python/object/apply:os.system ['touch {payload}']\n")  # the safe loader refuses it
    (run / "results.json").write_text("{not json")
    (run / "status.json").write_text("[1, 2]")
    [summary] = list_runs(tmp_path)
    assert summary["name"] is None and summary["best_value"] is None and summary["status"] == "unknown"
    assert main(["compare", str(run), str(run)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split() == ["config", "same", "same"]
    assert not payload.exists()


@pytest.mark.parametrize(("arguments", "message"), [
    (["ls", "/no/such/runs"], "no folder /no/such/runs: give the folder your runs are in"),
    (["compare", "/tmp", "/no/such/run"], "/tmp is not a run folder"),
])
def test_a_wrong_folder_is_one_line(arguments, message, capsys):
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"cadence: error: {message}") and len(error.strip().splitlines()) == 1
