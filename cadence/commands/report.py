"""``cadence report EXP_DIR [EXP_DIR ...] [--out DIR]``: one self-contained HTML page of a run, or
of several overlaid, with its figures as PNG files beside it (``pip install 'cadence[report]'``).

What the page shows, each part only when the runs have what it needs:

- the runs: status, best validation value and step, test figures, wall time;
- a figure for the loss and for every metric, against the update step: training (every
  ``log_every`` updates), validation (each epoch's, and those inside epochs);
- the learning rates and every scheduled value against the step;
- the validation history of the monitored value by epoch, the best validation marked;
- for classification, each confusion matrix as a heat map;
- for speech recognition, the test WER by reference length (words) and the worst utterances,
  reference against hypothesis (``hypotheses/test.jsonl``);
- the quarantine summary (training utterances skipped for bad audio, by reason);
- provenance: the config keys that differ between the runs, the versions of Python and the
  packages, and the sha256 of every data manifest read.

The page is one file: its figures are inside it (base64 PNG), and its only script, inline, checks
that every figure loaded (the page's title says how many did). No server, no network, nothing
from a CDN. Like ``ls`` and ``compare``, it only reads the run folders: nothing is imported or run.
"""

from __future__ import annotations

import base64
import collections
import html
import io
import json
from pathlib import Path
from typing import Any

from cadence.commands.runs import compare_runs, is_run
from cadence.errors import ConfigError
from cadence.runtime.files import read_json_object, write_bytes_atomic

# Count keys the error-rate metrics log beside each rate: figures of their own would only repeat it.
COUNT_SUFFIXES = ("_substitutions", "_deletions", "_insertions", "_reference_words", "_reference_characters", "_utterances")
SETTING_PREFIXES = ("train/lr", "train/schedule/")
WORST_SHOWN = 10
LENGTH_BUCKETS = ((1, 2), (3, 4), (5, 6), (7, 1000))  # reference words


def _records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON Lines file; a damaged line (a run killed mid-write) is skipped."""
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class Figures:
    """The page's figures: each drawn with matplotlib, saved as a PNG beside the page, embedded in it."""

    def __init__(self, directory: Path):
        import matplotlib

        matplotlib.use("Agg")  # files only: no display, no GUI toolkit
        import matplotlib.pyplot as pyplot

        self.pyplot = pyplot
        self.directory = directory / "figures"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.html: list[str] = []

    def new(self, title: str, size: tuple[float, float] = (6.4, 3.6)):
        figure, axes = self.pyplot.subplots(figsize=size)
        axes.set_title(title)
        return figure, axes

    def add(self, figure, name: str, caption: str) -> None:
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        self.pyplot.close(figure)
        data = buffer.getvalue()
        write_bytes_atomic(self.directory / f"{name}.png", data)
        self.html.append(f'<figure><img class="figure" alt="{html.escape(caption)}" src="data:image/png;base64,'
                         f'{base64.b64encode(data).decode("ascii")}"><figcaption>{html.escape(caption)}</figcaption></figure>')


def _curves(runs: dict[str, list[dict[str, Any]]], figures: Figures) -> None:
    """One figure a loss or metric, and one a setting (rates, scheduled values), against the step."""
    names: dict[str, None] = {}
    settings: dict[str, None] = {}
    for lines in runs.values():
        for line in lines:
            for key in line:
                if key.startswith(SETTING_PREFIXES):
                    settings[key] = None
                elif key.startswith(("train/", "val/")) and not key.endswith(COUNT_SUFFIXES) and not key.endswith("_time_s"):
                    names[key.split("/", 1)[1]] = None
    several = len(runs) > 1
    # Where each epoch ended (the first run's): a top axis of epochs over the step axis.
    ends = [(line["step"], line["epoch"] + 1) for line in next(iter(runs.values()), []) if line.get("split") == "epoch"]
    for name in names:
        figure, axes = figures.new(name)
        for index, (run, lines) in enumerate(runs.items()):
            color = f"C{index}"
            label = f"{run}: " if several else ""
            for split, key, style, what in (("train", f"train/{name}", "-", "training"),
                                            ("epoch", f"train/{name}", "o", "training, epoch mean"),
                                            (("epoch", "val"), f"val/{name}", "s--", "validation")):
                points = [(line["step"], line[key]) for line in lines
                          if line.get("split") in (split if isinstance(split, tuple) else (split,)) and line.get(key) is not None]
                if points:
                    axes.plot(*zip(*points), style, color=color, alpha=0.5 if what == "training" else 1.0,
                              markersize=4, label=label + what)
        axes.set_xlabel("update step")
        _mark_epochs(axes, ends)
        axes.legend(fontsize="small")
        figures.add(figure, f"curve-{_file_name(name)}", f"{name} against the update step (epochs ended at the top axis's marks)")
    if settings:
        figure, axes = figures.new("learning rates and scheduled values")
        for index, (run, lines) in enumerate(runs.items()):
            for offset, key in enumerate(settings):
                points = sorted({(line["step"], line[key]) for line in lines if line.get(key) is not None})
                if points:
                    axes.plot(*zip(*points), color=f"C{(index * len(settings) + offset) % 10}",
                              label=f"{run}: {key}" if several else key)
        axes.set_xlabel("update step")
        _mark_epochs(axes, ends)
        axes.legend(fontsize="small")
        figures.add(figure, "settings", "learning rates and scheduled values against the update step")


def _mark_epochs(axes, ends: list[tuple[int, int]]) -> None:
    """A top axis with a mark where each epoch ended (its number), and a faint line down from it."""
    if not ends:
        return
    top = axes.secondary_xaxis("top")
    top.set_xticks([step for step, _ in ends], [str(epoch) for _, epoch in ends], fontsize="x-small")
    top.set_xlabel("end of epoch", fontsize="small")
    for step, _ in ends:
        axes.axvline(step, color="grey", linewidth=0.5, alpha=0.4)


def _history(results: dict[str, dict[str, Any]], figures: Figures) -> None:
    """The monitored value of every validation by epoch (inside epochs: at their fraction), the best marked."""
    figure, axes = figures.new("validation history")
    drawn = False
    for index, (run, result) in enumerate(results.items()):
        monitor, history = result.get("monitor"), result.get("history") or []
        points = [(entry["epoch"], entry["step"], entry[monitor]) for entry in history
                  if isinstance(entry, dict) and isinstance(entry.get(monitor), (int, float))]
        if not points:
            continue
        drawn = True
        axes.plot([step for _, step, _ in points], [value for _, _, value in points], "o-", color=f"C{index}",
                  label=f"{run}: {monitor}" if len(results) > 1 else monitor)
        best_step = result.get("best_step") or next((step for epoch, step, _ in points if epoch == result.get("best_epoch")), None)
        best = [(step, value) for _, step, value in points if step == best_step]
        if best:
            axes.plot(*best[0], "*", color=f"C{index}", markersize=16, markeredgecolor="black",
                      label=f"best: epoch {result.get('best_epoch')}, step {best[0][0]}")
        epochs = [(step, epoch) for epoch, step, _ in points]
        axes.set_xticks([step for step, _ in epochs], [f"{step}\n(epoch {epoch})" for step, epoch in epochs], fontsize="x-small")
    if not drawn:
        figures.pyplot.close(figure)
        return
    axes.set_xlabel("update step (epoch)")
    axes.legend(fontsize="small")
    figures.add(figure, "validation-history", "the monitored validation value at every validation, the best one starred")


def _confusion(results: dict[str, dict[str, Any]], figures: Figures) -> None:
    for run, result in results.items():
        for name, report in (result.get("test_reports") or {}).items():
            matrix, classes = report.get("matrix"), report.get("classes")
            if not matrix:
                continue
            classes = classes or [str(index) for index in range(len(matrix))]
            figure, axes = figures.new(f"{run}: {name} (test)", size=(6.0, 5.2))
            image = axes.imshow(matrix, cmap="Blues")
            figure.colorbar(image, ax=axes)
            axes.set_xticks(range(len(classes)), classes, rotation=60, fontsize="small")
            axes.set_yticks(range(len(classes)), classes, fontsize="small")
            axes.set_xlabel("predicted")
            axes.set_ylabel("true")
            for row, counts in enumerate(matrix):
                for column, count in enumerate(counts):
                    if count:
                        axes.text(column, row, str(int(count)), ha="center", va="center", fontsize="x-small")
            figures.add(figure, f"confusion-{_file_name(run)}-{_file_name(name)}", f"{run}: the test confusion matrix, true against predicted")


def _speech(directories: dict[str, Path], figures: Figures) -> str:
    """WER by reference length (a figure), and each run's worst test utterances (a table)."""
    tables = []
    figure, axes = figures.new("test WER by reference length")
    drawn = False
    width = 0.8 / max(1, len(directories))
    for index, (run, directory) in enumerate(directories.items()):
        records = [record for record in _records(directory / "hypotheses" / "test.jsonl")
                   if isinstance(record.get("reference_words"), int) and isinstance(record.get("word_errors"), int)]
        if not records:
            continue
        drawn = True
        rates, labels = [], []
        for low, high in LENGTH_BUCKETS:
            bucket = [record for record in records if low <= record["reference_words"] <= high]
            words = sum(record["reference_words"] for record in bucket)
            rates.append(100 * sum(record["word_errors"] for record in bucket) / words if words else 0.0)
            labels.append(f"{low}-{high} words ({len(bucket)})" if high < 1000 else f"{low}+ words ({len(bucket)})")
        axes.bar([position + index * width for position in range(len(rates))], rates, width=width, color=f"C{index}", label=run)
        axes.set_xticks([position + width * (len(directories) - 1) / 2 for position in range(len(rates))], labels, fontsize="small")
        worst = sorted(records, key=lambda record: (-record["word_errors"] / max(1, record["reference_words"]), str(record.get("id"))))
        rows = "".join(f"<tr><td>{html.escape(str(record.get('id')))}</td><td>{record['word_errors']}/{record['reference_words']}</td>"
                       f"<td>{html.escape(str(record.get('reference')))}</td><td>{html.escape(str(record.get('hypothesis')))}</td></tr>"
                       for record in worst[:WORST_SHOWN] if record["word_errors"])
        tables.append(f"<h3>{html.escape(run)}: the worst test utterances</h3>" + (
            f"<table><tr><th>id</th><th>word errors</th><th>reference</th><th>hypothesis</th></tr>{rows}</table>"
            if rows else "<p>No test utterance has an error.</p>"))
    if not drawn:
        figures.pyplot.close(figure)
        return ""
    axes.set_ylabel("WER (%)")
    axes.legend(fontsize="small")
    figures.add(figure, "wer-by-length", "test WER by reference length in words (utterances in each bucket)")
    return "".join(tables)


def _quarantine(directories: dict[str, Path]) -> str:
    parts = []
    for run, directory in directories.items():
        records = _records(directory / "quarantine.jsonl")
        if not records:
            continue
        reasons = collections.Counter(str(record.get("reason", "?")).split(":", 1)[0] for record in records)
        rows = "".join(f"<tr><td>{html.escape(reason)}</td><td>{count}</td></tr>" for reason, count in reasons.most_common())
        parts.append(f"<h3>{html.escape(run)}: {len(records)} training utterances skipped for bad audio</h3>"
                     f"<table><tr><th>reason</th><th>utterances</th></tr>{rows}</table>")
    return "".join(parts) or "<p>No utterance was quarantined.</p>"


def _provenance(directories: dict[str, Path], differences: dict[str, list[Any]]) -> str:
    names = list(directories)
    header = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    parts = []
    if len(names) > 1:
        rows = "".join(f"<tr><td>{html.escape(key)}</td>" + "".join(f"<td>{html.escape(json.dumps(value, default=str))}</td>" for value in values) + "</tr>"
                       for key, values in differences.items())
        parts.append("<h3>Config keys that differ</h3>" + (f"<table><tr><th>key</th>{header}</tr>{rows}</table>" if rows else "<p>None: the configs are the same.</p>"))
    provenance = {name: read_json_object(directory / "provenance.json") for name, directory in directories.items()}
    versions = sorted({"python", *{package for record in provenance.values() for package in (record.get("packages") or {})}})
    rows = "".join(f"<tr><td>{html.escape(package)}</td>" + "".join(
        f"<td>{html.escape(str(record.get('python') if package == 'python' else (record.get('packages') or {}).get(package, '-')))}</td>"
        for record in provenance.values()) + "</tr>" for package in versions)
    parts.append(f"<h3>Versions</h3><table><tr><th>package</th>{header}</tr>{rows}</table>")
    data = [(name, split, entry) for name, record in provenance.items() for split, entry in (record.get("data") or {}).items() if isinstance(entry, dict)]
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{html.escape(split)}</td><td>{html.escape(str(entry.get('path')))}</td>"
                   f"<td><code>{html.escape(str(entry.get('sha256')))}</code></td></tr>" for name, split, entry in data)
    parts.append("<h3>Data</h3>" + (f"<table><tr><th>run</th><th>split</th><th>manifest</th><th>sha256</th></tr>{rows}</table>" if rows else "<p>No manifest recorded.</p>"))
    return "".join(parts)


def _summary(comparison: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for run, (name, result) in zip(comparison["runs"], results.items()):
        test = ", ".join(f"{key} {value:.4g}" for key, value in (result.get("test") or {}).items()
                         if isinstance(value, (int, float)) and not key.endswith(COUNT_SUFFIXES))
        best = result.get("best_value")
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(run.get('status')))}</td>"
                    f"<td>{html.escape(str(result.get('monitor', '-')))} {'-' if best is None else f'{best:.4g}'} "
                    f"(epoch {result.get('best_epoch', '-')}, step {result.get('best_step', '-')})</td>"
                    f"<td>{html.escape(test or '-')}</td><td>{html.escape(str(result.get('wall_time_s', '-')))}</td></tr>")
    return ("<table><tr><th>run</th><th>status</th><th>best validation</th><th>test</th><th>wall time (s)</th></tr>"
            + "".join(rows) + "</table>")


def _file_name(text: str) -> str:
    return "".join(character if character.isalnum() or character in "-_" else "-" for character in text)


# The page's one script: whether every figure loaded, said in the title (a browser test reads it)
# and as a console error naming a figure that did not.
CHECK_FIGURES = """
window.addEventListener("load", function () {
  var figures = document.querySelectorAll("img.figure"), loaded = 0;
  figures.forEach(function (figure) {
    if (figure.complete && figure.naturalWidth > 0) { loaded += 1; } else { console.error("figure did not load: " + figure.alt); }
  });
  document.title = document.title + " | figures loaded: " + loaded + " of " + figures.length;
});
"""
STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
figure { display: inline-block; width: 47%; margin: 0.5em 1%; vertical-align: top; }
img { width: 100%; } figcaption { font-size: 0.85em; color: #555; }
"""


def write_report(run_directories: list[str | Path], out: str | Path | None = None) -> Path:
    """Write ``report.html`` and ``figures/*.png`` into ``out`` (one run: ``EXP_DIR/report`` by
    default); the page's path back."""
    paths = [Path(directory) for directory in run_directories]
    for path in paths:
        if not is_run(path):
            raise ConfigError(f"{path} is not a run folder; cadence ls lists the runs under a folder")
    if out is None:
        if len(paths) > 1:
            raise ConfigError("cadence report of several runs needs --out DIR (where to write the page)")
        out = paths[0] / "report"
    out = Path(out)
    comparison = compare_runs(paths)
    names = _unique_names(comparison["runs"])
    directories = dict(zip(names, paths))
    results = {name: read_json_object(path / "results.json") for name, path in directories.items()}
    metrics = {name: _records(path / "metrics.jsonl") for name, path in directories.items()}
    try:
        figures = Figures(out)
    except ImportError:
        raise ConfigError("cadence report draws with matplotlib, which is not installed: pip install 'cadence[report]'") from None
    _curves(metrics, figures)
    _history(results, figures)
    _confusion(results, figures)
    speech = _speech(directories, figures)
    title = "cadence report: " + ", ".join(names)
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title><style>{STYLE}</style>"
            f"<script>{CHECK_FIGURES}</script></head><body><h1>{html.escape(title)}</h1>"
            f"<h2>Runs</h2>{_summary(comparison, results)}<h2>Figures</h2>{''.join(figures.html)}"
            + (f"<h2>Speech recognition</h2>{speech}" if speech else "")
            + f"<h2>Quarantine</h2>{_quarantine(directories)}"
            f"<h2>Provenance</h2>{_provenance(directories, comparison['config_differences'])}</body></html>")
    write_bytes_atomic(out / "report.html", page.encode("utf-8"))
    return out / "report.html"


def _unique_names(summaries: list[dict[str, Any]]) -> list[str]:
    """Each run's config name (from its ``cadence compare`` summary), with its folder's name where two runs share one."""
    folders = [Path(summary["run"]).name for summary in summaries]
    names = [str(summary.get("name") or folder) for summary, folder in zip(summaries, folders)]
    return [f"{name} ({folder})" if names.count(name) > 1 else name for name, folder in zip(names, folders)]
