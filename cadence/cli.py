"""The ``cadence`` command: a thin layer over the config and Python APIs.

    cadence train RECIPE.yaml [key=value ...] [--exp-dir DIR] [--print-config]
    cadence data fsdd [--root PATH] --out DIR

A user error (missing file, bad YAML, unknown key, missing data) prints one line and
exits with code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from cadence.errors import CadenceError

USER_ERROR = 2


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

    data = commands.add_parser("data", help="prepare corpora")
    corpora = data.add_subparsers(dest="corpus", required=True)
    fsdd = corpora.add_parser("fsdd", help="write FSDD manifests for the digits and speakers tasks")
    fsdd.add_argument("--root", help="FSDD folder (default: ../shared/data/fsdd, then the download cache)")
    fsdd.add_argument("--out", required=True, help="folder for the manifests")
    fsdd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def run_train(arguments: argparse.Namespace) -> int:
    from cadence.run import print_config, train_recipe

    if arguments.print_config:
        print(print_config(arguments.recipe, arguments.overrides), end="")
        return 0
    results = train_recipe(arguments.recipe, arguments.overrides, arguments.exp_dir)
    summary = {key: results[key] for key in ("experiment", "best_epoch", "best_validation", "test", "wall_time_s", "final_checkpoint")}
    print(json.dumps(summary, indent=2))
    return 0


def run_data(arguments: argparse.Namespace) -> int:
    from cadence.corpora.fsdd import find_fsdd, prepare_fsdd

    written = prepare_fsdd(find_fsdd(arguments.root), arguments.out)
    print(json.dumps({task: {split: str(path) for split, path in splits.items()} for task, splits in written.items()}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may also follow options such as --exp-dir; argparse leaves those as extras.
    arguments, extras = parser.parse_known_args(argv)
    if extras:
        if arguments.command != "train" or any(extra.startswith("-") or "=" not in extra for extra in extras):
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        arguments.overrides.extend(extras)
    handlers = {"train": run_train, "data": run_data}
    try:
        return handlers[arguments.command](arguments)
    except CadenceError as error:
        if arguments.debug:
            raise
        print(f"cadence: error: {error}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("cadence: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
