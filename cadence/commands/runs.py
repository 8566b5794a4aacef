"""``cadence ls`` and ``cadence compare``: the runs under a folder, and chosen runs side by side.

Both only read what a run's folder holds (``status.json``, ``results.json``, ``config.yaml`` with
YAML's safe loader, ``config.sha256``, ``provenance.json``): nothing of a folder is imported or
run, and a file that is missing or damaged shows as ``-``, never as an error.

    cadence ls [RUNS_DIR]                 one line a run: name, started, status, best, test, wall time, config hash
    cadence compare RUN RUN ...           the same side by side, every validation and test figure,
                                          and the config keys whose values differ

Both print a table; ``--json`` prints the same as one JSON document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from cadence.errors import ConfigError
from cadence.run_status import STATUS_FILE, read_status
from cadence.runtime.files import dotted_keys, read_json_object

__all__ = ["compare_runs", "config_differences", "format_table", "list_runs", "read_config", "summarize_run"]

RUN_MARKERS = (STATUS_FILE, "results.json", "config.yaml", "provenance.json")
MISSING = "-"
ABSENT_KEY = "(missing)"  # a config key one run has and another has not
CELL_WIDTH = 60  # longer values are cut in tables (--json has them whole)


def is_run(directory: Path) -> bool:
    return directory.is_dir() and any((directory / marker).is_file() for marker in RUN_MARKERS)


def find_runs(root: Path) -> list[Path]:
    """Every run folder under ``root`` (``root`` itself if it is one); a run's own subfolders
    (checkpoints, code) are not searched."""
    if is_run(root):
        return [root]
    found = []
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        if child.is_dir() and not child.is_symlink():
            found += find_runs(child)
    return found


def read_config(directory: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load((directory / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return content if isinstance(content, dict) else {}


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return MISSING if value is None else str(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summarize_run(directory: Path) -> dict[str, Any]:
    """What ``cadence ls`` shows of one run, as plain values."""
    directory = Path(directory)
    status, results, config = read_status(directory), read_json_object(directory / "results.json"), read_config(directory)
    monitor = results.get("monitor") or (config.get("trainer") or {}).get("monitor")
    test = results.get("test") or {}
    # The test figure of the monitored metric (val/wer -> test/wer), else the test loss.
    test_key = next((key for key in (f"test/{str(monitor).split('/', 1)[-1]}", "test/loss") if key in test), None)
    digest = (results.get("config_sha256") or _text(directory / "config.sha256") or "")[:12]
    return {
        "run": str(directory),
        "name": config.get("name"),
        "started": status.get("started") or read_json_object(directory / "provenance.json").get("created"),
        "status": status["status"],
        "note": status.get("note"),
        "monitor": monitor,
        "best_value": results.get("best_value"),
        "best_epoch": results.get("best_epoch"),
        "test_metric": test_key,
        "test_value": test.get(test_key) if test_key else None,
        "wall_time_s": results.get("wall_time_s"),
        "config_sha256": digest or None,
    }


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def list_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every run under ``root``, the earliest started first."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"no folder {root}: give the folder your runs are in (cadence ls RUNS_DIR)")
    summaries = [summarize_run(directory) for directory in find_runs(root)]
    return sorted(summaries, key=lambda summary: (summary["started"] or "", summary["run"]))


def ls_table(summaries: list[dict[str, Any]], root: Path) -> str:
    rows = [["run", "name", "started", "status", "best", "test", "wall", "config"]]
    for summary in summaries:
        relative = Path(summary["run"]).relative_to(root.resolve()) if Path(summary["run"]).is_relative_to(root.resolve()) else summary["run"]
        best = (f"{summary['monitor']} {_number(summary['best_value'])} (epoch {summary['best_epoch']})"
                if summary["best_value"] is not None else MISSING)
        test = f"{summary['test_metric']} {_number(summary['test_value'])}" if summary["test_metric"] else MISSING
        wall = _duration(summary["wall_time_s"])
        rows.append([str(relative) or ".", summary["name"] or MISSING, summary["started"] or MISSING, summary["status"], best,
                     test, wall, summary["config_sha256"] or MISSING])
    return format_table(rows)


def _duration(seconds: Any) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return MISSING
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def config_differences(configs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The dotted keys whose values differ between ``configs``, each with its value in every
    config (``"(missing)"`` where a config has no such key).

    >>> config_differences([{"optimizer": {"lr": 0.1, "name": "adam"}}, {"optimizer": {"lr": 0.2, "name": "adam"}, "seed": 1}])
    {'optimizer.lr': [0.1, 0.2], 'seed': ['(missing)', 1]}
    """
    flat = [dotted_keys(config) for config in configs]
    keys = sorted(set().union(*flat)) if flat else []
    differences = {}
    for key in keys:
        values = [entry.get(key, ABSENT_KEY) for entry in flat]
        if any(value != values[0] for value in values[1:]):
            differences[key] = values
    return differences


def compare_runs(directories: list[str | Path]) -> dict[str, Any]:
    """Chosen runs side by side: their summaries, every validation and test figure, and the config differences."""
    paths = [Path(directory) for directory in directories]
    for path in paths:
        if not is_run(path):
            raise ConfigError(f"{path} is not a run folder (it has none of {', '.join(RUN_MARKERS)}); cadence ls lists the runs")
    results = [read_json_object(path / "results.json") for path in paths]
    figures = sorted({key for result in results for section in ("best_validation", "test")
                      for key in (result.get(section) or {})})
    return {
        "runs": [summarize_run(path) for path in paths],
        "figures": {key: [(result.get("best_validation") or {}).get(key, (result.get("test") or {}).get(key))
                          for result in results] for key in figures},
        "config_differences": config_differences([read_config(path) for path in paths]),
    }


def compare_table(comparison: dict[str, Any]) -> str:
    runs = comparison["runs"]
    rows = [["", *[Path(run["run"]).name for run in runs]]]
    for field in ("name", "status", "started", "best_epoch", "config_sha256"):
        rows.append([field, *[_number(run[field]) for run in runs]])
    rows.append(["wall time", *[_duration(run["wall_time_s"]) for run in runs]])
    rows += [[key, *map(_number, values)] for key, values in comparison["figures"].items()]
    differences = comparison["config_differences"]
    rows.append(["config differences", *["" for _ in runs]] if differences else ["config", *["same" for _ in runs]])
    rows += [[f"  {key}", *map(_inline, values)] for key, values in differences.items()]
    return format_table(rows)


def _inline(value: Any) -> str:
    """A config value in a cell: JSON for lists and mappings, ``null`` for None, cut to CELL_WIDTH."""
    if value is ABSENT_KEY:
        return MISSING
    text = json.dumps(value) if isinstance(value, (list, dict)) or value is None else _number(value)
    return text if len(text) <= CELL_WIDTH else text[:CELL_WIDTH - 3] + "..."


def format_table(rows: list[list[str]]) -> str:
    """Rows as left-aligned columns, a header rule under the first row."""
    widths = [max(len(str(row[column])) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join([lines[0], "  ".join("-" * width for width in widths), *lines[1:]])
