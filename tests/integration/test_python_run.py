"""The README's Python example, run as a script, leaves a complete experiment folder, which
`cadence resume` continues and `cadence.load` loads.

The script is taken from README.md itself (the first Python block of "The Python API"), so
the README cannot drift from what is tested. Each step runs in its own process, as a user
would run it: the registered components are found again through the folder's code/.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cadence.config.schema import validate_recipe
from cadence.runtime.files import config_hash

REPOSITORY = Path(__file__).resolve().parents[2]


def readme_example() -> tuple[str, str]:
    """(file name, code) of the README's Python API example (its first line names the file)."""
    readme = (REPOSITORY / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## The Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    name = re.match(r"# (\S+\.py)\n", code).group(1)
    return name, code


def run(arguments: list[str], cwd: Path, expect: int = 0) -> subprocess.CompletedProcess:
    # The checkout's cadence, whichever cadence the interpreter has installed.
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run([sys.executable, *arguments], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)
    assert completed.returncode == expect, completed.stderr[-3000:]
    return completed


@pytest.fixture(scope="module")
def python_run(tmp_path_factory):
    """The folder the README's script leaves, and the script's file name."""
    folder = tmp_path_factory.mktemp("python_run")
    name, code = readme_example()
    (folder / name).write_text(code, encoding="utf-8")
    run([name], cwd=folder)
    (directory,) = (folder / "runs").iterdir()
    return directory, name


def test_the_script_leaves_a_complete_experiment_folder(python_run):
    directory, script = python_run
    for name in ("config.yaml", "config.sha256", "provenance.json", "results.json", f"code/{script}", "train.log"):
        assert (directory / name).is_file(), name
    config = yaml.safe_load((directory / "config.yaml").read_text())
    validate_recipe(config)
    assert (directory / "config.sha256").read_text().strip() == config_hash(config)
    assert config["model"]["name"] == "blob_mlp" and config["imports"] == [Path(script).stem]
    provenance = json.loads((directory / "provenance.json").read_text())
    assert provenance["entry_point"].endswith(script) and f"modules/{script}" in provenance["code"]
    assert provenance["command"][0] == script and provenance["config_sha256"] == config_hash(config)
    results = json.loads((directory / "results.json").read_text())
    assert results["config_sha256"] == config_hash(config) and results["test"]


def test_cadence_resume_trains_one_more_epoch_and_load_gives_the_best_weights(python_run):
    directory, _ = python_run
    epochs = json.loads((directory / "results.json").read_text())["epochs_completed"]
    assert epochs == yaml.safe_load((directory / "config.yaml").read_text())["trainer"]["max_epochs"]  # not stopped early
    resume = ["-m", "cadence", "resume", str(directory), f"trainer.max_epochs={epochs + 1}"]
    # The script is the folder's own code: imported only when the user says they trust it.
    refused = run(resume, cwd=directory.parent, expect=2)
    assert "--trust-code" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    run([*resume, "--trust-code"], cwd=directory.parent)
    results = json.loads((directory / "results.json").read_text())
    assert results["epochs_completed"] == epochs + 1 and len(results["history"]) == epochs + 1
    (resume,) = json.loads((directory / "provenance.json").read_text())["resumes"]
    assert resume["exact"] and resume["changes"] == [{"key": "trainer.max_epochs", "saved": epochs, "new": epochs + 1}]
    check = f"""
import json, torch, cadence
from cadence.checkpoint import find_best_checkpoint, load_checkpoint
task = cadence.load({str(directory)!r}, trust_code=True)
state, _ = load_checkpoint(find_best_checkpoint({str(directory)!r}))
same = all(torch.equal(value, state["task"][key]) for key, value in task.state_dict().items())
print(json.dumps({{"training": task.training, "same": same and len(state["task"]) > 0, "model": type(task.model).__name__}}))
"""
    loaded = json.loads(run(["-c", check], cwd=directory.parent).stdout.strip().splitlines()[-1])
    assert loaded == {"training": False, "same": True, "model": "BlobMLP"}
