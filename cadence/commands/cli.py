"""The ``cadence`` command: a thin layer over the config and Python APIs.

    cadence train RECIPE.yaml [key=value ...] [--exp-dir DIR] [--print-config]
    cadence resume EXP_DIR [key=value ...] [--from CHECKPOINT] [--allow-config-change] [--trust-code]
    cadence eval EXP_DIR_OR_CHECKPOINT [--split test] [--device auto] [--trust-code]
    cadence transcribe EXP_DIR_OR_CHECKPOINT AUDIO... [--device cpu] [--trust-code]
    cadence export EXP_DIR_OR_CHECKPOINT --format torchscript|onnx [--out DIR] [--trust-code]
    cadence report EXP_DIR [EXP_DIR ...] [--out DIR]
    cadence verify-resume RECIPE.yaml [key=value ...] [--steps N] [--interrupt-at K]
    cadence ls [RUNS_DIR] [--json]
    cadence compare RUN RUN ... [--json]
    cadence data fsdd [--root PATH] --out DIR
    cadence data connected-digits [--root PATH] [--out DIR] [--seed N] [--sizes 4000,500,500]
    cadence data manifest DIR --out FILE [--transcripts TSV]
    cadence data check MANIFEST [--sample-rate N] [--no-resample] [--mono mix|first|error] [--min-duration S]

Results are strict JSON on stdout (a non-finite number is ``null``). A user error (missing
file, bad YAML, unknown key, missing data, a full or read-only disk) prints one line and
exits with code 2; ``--debug`` shows the traceback. ``ls`` and ``compare`` print a table for a
person to read, and JSON with ``--json``.
``cadence data check`` prints a readable report on stderr and exits with code 1 when it
found bad audio; so does ``cadence verify-resume`` when the runs differ. A training stopped
by SIGTERM or SIGINT saves a checkpoint and exits with 128 + the signal number.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from cadence.errors import CadenceError, TrainingInterrupted
from cadence.runtime.files import STORAGE_ERRNOS, strict_json
from cadence.runtime.logs import setup_console_logging

USER_ERROR = 2
BAD_DATA_FOUND = 1


def _number_at_least(kind: type, minimum: float, inclusive: bool, what: str):
    """An argparse ``type=`` that parses ``kind`` and rejects values below ``minimum``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        # `not value >= minimum` also rejects nan.
        if value is None or not (value >= minimum if inclusive else value > minimum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _number_at_least(int, 0, inclusive=False, what="an integer > 0")
_non_negative_int = _number_at_least(int, 0, inclusive=True, what="an integer >= 0")
_non_negative_float = _number_at_least(float, 0.0, inclusive=True, what="a number of seconds >= 0")


def _split_sizes(text: str) -> tuple[int, int, int]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) != 3 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected three counts >= 1 as TRAIN,VALID,TEST (e.g. 4000,500,500), got {text!r}")
    return sizes  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cadence", description="Train, validate and test speech models.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a recipe, then test the best model")
    train.add_argument("recipe", help="a YAML recipe, e.g. recipes/fsdd/digits.yaml")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, YAML-typed: optimizer.lr=3e-3")
    train.add_argument("--exp-dir", help="experiment folder (default: <experiment.root>/<name>/<time>)")
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    # Also accepted after the command; SUPPRESS keeps it from resetting the top-level flag.
    train.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    resume = commands.add_parser("resume", help="continue an experiment from its newest valid checkpoint")
    resume.add_argument("experiment", help="the experiment folder (holding config.yaml and checkpoints/)")
    resume.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. trainer.max_epochs=40")
    resume.add_argument("--from", dest="checkpoint", help="a checkpoint folder to start from (default: the newest valid)")
    resume.add_argument("--allow-config-change", action="store_true",
                        help="accept overrides that make the run differ from an uninterrupted one")
    resume.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on a split; print the metrics as JSON")
    evaluate.add_argument("checkpoint", metavar="EXP_DIR_OR_CHECKPOINT", help="an experiment folder (its best valid checkpoint) or a checkpoint folder")
    evaluate.add_argument("--split", choices=("train", "valid", "test"), default="test", help="which data (default: test)")
    evaluate.add_argument("--checkpoint", dest="checkpoint_override", metavar="CHECKPOINT", help="a checkpoint folder, in place of the newest")
    evaluate.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")

    report = commands.add_parser("report", help="an HTML page of runs: curves, validation history, errors, provenance")
    report.add_argument("runs", nargs="+", metavar="EXP_DIR", help="one run folder, or several to overlay")
    report.add_argument("--out", help="the folder to write report.html and figures/ into (default, for one run: EXP_DIR/report)")

    export = commands.add_parser("export", help="write the model with its feature front-end as TorchScript or ONNX")
    export.add_argument("checkpoint", metavar="EXP_DIR_OR_CHECKPOINT", help="an experiment folder (its best valid checkpoint) or a checkpoint folder")
    export.add_argument("--format", choices=("torchscript", "onnx"), required=True, help="torchscript (torch.jit.load) or onnx (onnxruntime)")
    export.add_argument("--out", help="the folder to write (default: EXP_DIR/export)")

    transcribe = commands.add_parser("transcribe", help="print the text of audio files (one JSON line each)")
    transcribe.add_argument("checkpoint", metavar="EXP_DIR_OR_CHECKPOINT", help="an experiment folder (its best valid checkpoint) or a checkpoint folder")
    transcribe.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files (any rate: resampled to the model's)")
    transcribe.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    for command in (evaluate, transcribe, export):
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    for command in (resume, evaluate, transcribe, export):
        command.add_argument(
            "--trust-code", action="store_true",
            help="import the Python modules the run's config names from the folder's code/ (read them first: "
                 "importing runs them); without it only installed modules are imported",
        )

    verify = commands.add_parser("verify-resume", help="check that a recipe resumes bit-identically")
    verify.add_argument("recipe")
    verify.add_argument("overrides", nargs="*", metavar="key=value")
    verify.add_argument("--steps", type=int, default=20, help="optimizer steps of each run (default 20)")
    verify.add_argument("--interrupt-at", type=int, help="steps before the interruption (default: steps // 2 + 1)")
    verify.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    listing = commands.add_parser("ls", help="the runs under a folder: status, best and test figures, wall time")
    listing.add_argument("runs_dir", nargs="?", default="runs", help="the folder to search (default: runs)")
    compare = commands.add_parser("compare", help="runs side by side, with the config keys whose values differ")
    compare.add_argument("runs", nargs="+", metavar="RUN")
    for command in (listing, compare):
        command.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    data = commands.add_parser("data", help="prepare corpora, build and check manifests")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    fsdd = data_commands.add_parser("fsdd", help="write FSDD manifests for the digits and speakers tasks")
    fsdd.add_argument("--root", help="FSDD folder (default: ../shared/data/fsdd, then the download cache)")
    fsdd.add_argument("--out", required=True, help="folder for the manifests")

    digits = data_commands.add_parser(
        "connected-digits", help="generate the connected-digits recognition corpus from FSDD (reused when ready)"
    )
    digits.add_argument("--root", help="FSDD folder (default: ../shared/data/fsdd, then the download cache)")
    digits.add_argument("--out", help="output folder (default: a folder named after the parameters in the cache)")
    digits.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default: 0)")
    digits.add_argument(
        "--sizes", type=_split_sizes, default=(4000, 500, 500), metavar="TRAIN,VALID,TEST",
        help="utterances per split (default: 4000,500,500)",
    )

    manifest = data_commands.add_parser("manifest", help="write a manifest for every audio file under a folder")
    manifest.add_argument("folder", metavar="DIR", help="folder of audio files (wav, flac, ogg; subfolders too)")
    manifest.add_argument("--out", required=True, help="the manifest file to write (JSON Lines)")
    manifest.add_argument(
        "--transcripts", metavar="TSV", help="id<TAB>text lines (default: a .txt file beside each audio file)"
    )

    check = data_commands.add_parser("check", help="decode every file of a manifest and report bad audio")
    check.add_argument("manifest", metavar="MANIFEST", help="a JSON Lines manifest")
    check.add_argument(
        "--sample-rate", type=_positive_int, help="expected rate in Hz (default: each file's own rate)"
    )
    check.add_argument(
        "--no-resample", dest="resample", action="store_false", help="files at another rate are bad (wrong_rate)"
    )
    check.add_argument(
        "--mono", choices=("mix", "first", "error"), default="mix", help="multi-channel policy (default: mix)"
    )
    check.add_argument(
        "--min-duration", type=_non_negative_float, default=0.0, metavar="S", help="shorter audio is bad (default: 0)"
    )
    for command in (fsdd, digits, manifest, check):
        # Also accepted after the command; SUPPRESS keeps it from resetting the top-level flag.
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


# Each command imports its implementation when it runs (the imports inside the run_*
# functions): those load torch and the audio stack, which `cadence --help` and a mistyped
# command should not wait for. None of them dodges an import cycle (see tests/test_architecture.py).


def run_train(arguments: argparse.Namespace) -> int:
    from cadence.commands.train import print_config, train_recipe
    from cadence.runtime.distributed import leave_process_group

    if arguments.print_config:
        print(print_config(arguments.recipe, arguments.overrides), end="")
        return 0
    finished = False
    try:
        print_summary(train_recipe(arguments.recipe, arguments.overrides, arguments.exp_dir))
        finished = True
    finally:
        leave_process_group(finished)  # the group train_recipe joined under torchrun, shut down before the interpreter exits
    return 0


def print_summary(results: dict) -> None:
    if "experiment" not in results:
        return  # a process other than rank 0 under torchrun: rank 0 prints the run's summary
    summary = {key: results[key] for key in ("experiment", "best_epoch", "best_validation", "test", "wall_time_s", "final_checkpoint")}
    print(strict_json(summary, indent=2))


def run_resume(arguments: argparse.Namespace) -> int:
    from cadence.commands.train import resume_experiment
    from cadence.runtime.distributed import leave_process_group

    finished = False
    try:
        print_summary(resume_experiment(
            arguments.experiment, arguments.overrides, arguments.checkpoint, arguments.allow_config_change, arguments.trust_code,
        ))
        finished = True
    finally:
        leave_process_group(finished)  # as in run_train
    return 0


def run_verify_resume(arguments: argparse.Namespace) -> int:
    from cadence.commands.verify import verify_resume

    report = verify_resume(arguments.recipe, arguments.overrides, arguments.steps, arguments.interrupt_at)
    print(strict_json(report, indent=2))
    return 0 if report["identical"] else 1


def run_eval(arguments: argparse.Namespace) -> int:
    from cadence.commands.inference import evaluate_checkpoint

    report = evaluate_checkpoint(
        arguments.checkpoint_override or arguments.checkpoint, arguments.split, arguments.device, arguments.trust_code,
    )
    print(strict_json(report, indent=2))
    return 0


def run_transcribe(arguments: argparse.Namespace) -> int:
    from cadence.commands.inference import transcribe_files

    for result in transcribe_files(arguments.checkpoint, arguments.audio, arguments.device, trust_code=arguments.trust_code):
        print(strict_json(result, ensure_ascii=False))
    return 0


def run_report(arguments: argparse.Namespace) -> int:
    from cadence.commands.report import write_report

    page = write_report(arguments.runs, arguments.out)
    print(strict_json({"report": str(page), "figures": sorted(str(path) for path in (page.parent / "figures").glob("*.png"))}, indent=2))
    return 0


def run_export(arguments: argparse.Namespace) -> int:
    from cadence.commands.export import export_model

    print(strict_json(export_model(arguments.checkpoint, arguments.format, arguments.out, arguments.trust_code), indent=2))
    return 0


def run_ls(arguments: argparse.Namespace) -> int:
    from pathlib import Path

    from cadence.commands.runs import list_runs, ls_table

    summaries = list_runs(arguments.runs_dir)
    print(strict_json(summaries, indent=2) if arguments.json else ls_table(summaries, Path(arguments.runs_dir)))
    return 0


def run_compare(arguments: argparse.Namespace) -> int:
    from cadence.commands.runs import compare_runs, compare_table

    comparison = compare_runs(arguments.runs)
    print(strict_json(comparison, indent=2) if arguments.json else compare_table(comparison))
    return 0


def run_data(arguments: argparse.Namespace) -> int:
    if arguments.data_command == "fsdd":
        from cadence.corpora.fsdd import find_fsdd, prepare_fsdd

        written = prepare_fsdd(find_fsdd(arguments.root), arguments.out)
        print(strict_json({task: {split: str(path) for split, path in splits.items()} for task, splits in written.items()}, indent=2))
        return 0
    if arguments.data_command == "connected-digits":
        from cadence.corpora.connected_digits import prepare_connected_digits

        manifests = prepare_connected_digits(arguments.root, arguments.out, seed=arguments.seed, sizes=arguments.sizes)
        print(strict_json({split: str(path) for split, path in manifests.items()}, indent=2))
        return 0
    if arguments.data_command == "manifest":
        from cadence.data.inspect import build_manifest

        entries = build_manifest(arguments.folder, arguments.out, transcripts=arguments.transcripts)
        summary = {
            "manifest": arguments.out,
            "utterances": len(entries),
            "with_text": sum(entry.text is not None for entry in entries),
            "hours": round(sum(entry.duration for entry in entries) / 3600, 4),
        }
        print(strict_json(summary, indent=2))
        return 0
    # The last command: check.
    from cadence.data.inspect import check_manifest

    report = check_manifest(
        arguments.manifest, arguments.sample_rate, arguments.resample, arguments.mono, arguments.min_duration
    )
    # The readable report on stderr, so that stdout stays one JSON document (`> summary.json`).
    print(report.format(), file=sys.stderr)
    print(strict_json(report.summary(), indent=2))
    return 0 if report.is_clean else BAD_DATA_FOUND


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may also follow options such as --exp-dir; argparse leaves those as extras.
    arguments, extras = parser.parse_known_args(argv)
    if extras:
        takes_overrides = arguments.command in ("train", "resume", "verify-resume")
        if not takes_overrides or any(extra.startswith("-") or "=" not in extra for extra in extras):
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        arguments.overrides.extend(extras)
    handlers = {
        "train": run_train, "resume": run_resume, "eval": run_eval, "transcribe": run_transcribe,
        "verify-resume": run_verify_resume, "data": run_data, "ls": run_ls, "compare": run_compare, "export": run_export,
        "report": run_report,
    }
    setup_console_logging(logging.WARNING)  # warnings say WARNING:, whichever the command (train shows INFO too)
    try:
        return handlers[arguments.command](arguments)
    except TrainingInterrupted as stopped:
        print(f"cadence: {stopped}", file=sys.stderr)
        return 128 + stopped.signal_number if stopped.signal_number else 1
    except CadenceError as error:
        if arguments.debug:
            raise
        print(f"cadence: error: {error}", file=sys.stderr)
        return USER_ERROR
    except OSError as error:
        # A full or read-only disk met by a write outside cadence's write helpers (those raise
        # StorageError): the user's to fix, so one line too. Any other OSError is a bug.
        if arguments.debug or error.errno not in STORAGE_ERRNOS:
            raise
        print(f"cadence: error: {error.filename or 'a file'}: {error.strerror}; check free space and permissions there",
              file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("cadence: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
