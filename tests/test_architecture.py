"""The layer rules of docs/architecture.md, as import-linter contracts (pyproject.toml).

The first test checks cadence as it is. The second proves the check can fail: it copies the
package, adds one import the rules forbid, and expects import-linter to name the broken
contract.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(repository: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH first: grimp must read this copy of cadence, not the installed one.
    environment = {**os.environ, "PYTHONPATH": str(repository)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=repository, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_the_layer_contracts_hold():
    completed = lint_imports(REPOSITORY)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "0 broken" in completed.stdout


def test_an_import_against_the_layers_breaks_a_contract(tmp_path):
    shutil.copytree(REPOSITORY / "cadence", tmp_path / "cadence", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPOSITORY / "pyproject.toml", tmp_path / "pyproject.toml")
    trainer = tmp_path / "cadence" / "trainer.py"
    trainer.write_text(trainer.read_text() + "\nfrom cadence.config import build  # the loop reaching up\n")
    completed = lint_imports(tmp_path)
    assert completed.returncode != 0
    assert "The loop imports neither the config layer, the CLI nor the audio stack BROKEN" in completed.stdout
    assert "cadence.trainer -> cadence.config.build" in completed.stdout


def test_importing_the_loop_loads_neither_the_config_layer_nor_the_audio_stack():
    # What a user of the Python API pays for: checked in a fresh process, whatever the contracts say.
    probe = ("import sys, cadence.trainer; print(sorted(name for name in sys.modules if name.split('.')[0] in "
             "('soundfile', 'soxr') or name.startswith(('cadence.config', 'cadence.commands', 'cadence.data', 'cadence.corpora'))))")
    completed = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
                               capture_output=True, text=True, timeout=120, check=True)
    assert completed.stdout.strip() == "[]"
