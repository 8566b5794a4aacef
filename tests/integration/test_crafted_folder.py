"""A folder someone gives you is data, not code.

A real run (a tiny DeepSpeech2 on FSDD connected digits) is turned into what an attacker
would share: its stored config imports ``evil.py``, which sits in the folder's
``code/modules`` and writes a file when imported, and every manifest is signed again. No
command and no Python entry point may import it without ``--trust-code`` / ``trust_code=True``;
with it, the module is imported and everything works. A checkpoint whose state was replaced
and signed again is skipped (a folder) or refused naming what did not fit (named alone).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cadence
from cadence.checkpoint.checkpointer import checkpoints_in_order
from cadence.checkpoint.format import MANIFEST_FILE, STATE_FILE
from cadence.commands.cli import main
from cadence.errors import CheckpointError, ConfigError

REPOSITORY = Path(__file__).resolve().parents[2]
TINY_DS2 = [
    "data.corpus_sizes=[60,12,12]", "data.batching.max_frames=6000", "trainer.max_epochs=2", "trainer.progress_bar=false",
    "model.rnn_hidden=24", "model.rnn_layers=1", "model.conv_channels=4", "checkpoint.keep_last=2",
]
MODULE = "crafted_payload"  # a name no other test imports


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, fsdd_root) -> Path:
    directory = tmp_path_factory.mktemp("crafted") / "run"
    assert main(["train", str(REPOSITORY / "recipes/fsdd/asr_ds2.yaml"), *TINY_DS2, "--exp-dir", str(directory)]) == 0
    return directory


def sign_again(checkpoint: Path, name: str, data: bytes) -> None:
    """Replace one file of a checkpoint and fix its manifest, as an attacker would."""
    (checkpoint / name).write_bytes(data)
    manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (checkpoint / MANIFEST_FILE).write_text(json.dumps(manifest))


def edit_state(checkpoint: Path, edit) -> None:
    state = json.loads((checkpoint / STATE_FILE).read_text())
    edit(state)
    sign_again(checkpoint, STATE_FILE, json.dumps(state).encode())


def checkpoints(run: Path) -> list[Path]:
    return sorted(path for path in (run / "checkpoints").iterdir() if not path.name.startswith("."))


@pytest.fixture
def crafted(trained_run, tmp_path) -> tuple[Path, Path]:
    """A copy of the run whose config imports code of the folder's; and the file that code writes."""
    run = tmp_path / "shared-with-you"
    shutil.copytree(trained_run, run)
    marker = tmp_path / "code-ran.txt"
    (run / "code" / "modules").mkdir(parents=True, exist_ok=True)
    (run / "code" / "modules" / f"{MODULE}.py").write_text(
        f"from pathlib import Path\nwith open({str(marker)!r}, 'a') as marker:\n    marker.write('imported\\n')\n"
    )
    for checkpoint in checkpoints(run):
        edit_state(checkpoint, lambda state: state["config"].__setitem__("imports", [f"{MODULE}.py"]))
    config = (run / "config.yaml").read_text().replace("imports: []", f"imports:\n- {MODULE}.py")
    (run / "config.yaml").write_text(config)
    yield run, marker
    # Trusted imports stay in this process: forget them, so the next test starts clean.
    sys.modules.pop(MODULE, None)
    modules = str(run / "code" / "modules")
    while modules in sys.path:
        sys.path.remove(modules)


def one_line_naming_the_flag(error: str) -> None:
    lines = error.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in error, error
    assert "--trust-code" in lines[0] and f"{MODULE}.py" in lines[0], lines[0]


def test_no_command_runs_the_folders_code_without_trust(crafted, fsdd_root, capsys):
    run, marker = crafted
    recording = next((fsdd_root / "recordings").glob("*.wav"))
    commands = [
        ["eval", str(run)],
        ["eval", str(checkpoints(run)[-1])],
        ["transcribe", str(run), str(recording)],
        ["resume", str(run), "trainer.max_epochs=3"],
    ]
    before = sorted(path.name for path in run.rglob("*"))
    for command in commands:
        capsys.readouterr()
        assert main(command) == 2, command
        one_line_naming_the_flag(capsys.readouterr().err)
    for rebuild in (cadence.load, cadence.trainer_from_checkpoint):
        with pytest.raises(ConfigError, match="--trust-code"):
            rebuild(run)
    assert not marker.exists()
    assert sorted(path.name for path in run.rglob("*")) == before  # nothing written either


def test_with_trust_the_module_is_imported_and_every_command_works(crafted, fsdd_root, capsys):
    run, marker = crafted
    recording = next((fsdd_root / "recordings").glob("*.wav"))
    assert main(["eval", str(run), "--trust-code"]) == 0
    assert marker.read_text() == "imported\n"
    assert "test/wer" in json.loads(capsys.readouterr().out)["metrics"]
    assert main(["transcribe", str(run), str(recording), "--trust-code"]) == 0
    assert json.loads(capsys.readouterr().out)["audio"] == str(recording)
    assert cadence.load(run, trust_code=True).config["imports"] == [f"{MODULE}.py"]
    assert main(["resume", str(run), "trainer.max_epochs=3", "--trust-code"]) == 0
    assert json.loads((run / "results.json").read_text())["best_epoch"] >= 1
    assert marker.read_text() == "imported\n"  # imported once: a module runs once per process


def set_imports(run: Path, imports: list[str]) -> None:
    for checkpoint in checkpoints(run):
        edit_state(checkpoint, lambda state: state["config"].__setitem__("imports", imports))


def test_an_installed_module_is_imported_without_trust(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    set_imports(run, ["numpy.linalg"])  # no file of the folder's: the environment has it
    assert main(["eval", str(run)]) == 0


@pytest.mark.parametrize("imports", [
    ["venv.__main__"],  # the standard library acts when some of its modules are imported
    ["unittest.__main__"],
    ["antigravity"],
    ["outer.run.code.modules.crafted_payload"],  # through a namespace package in the current folder
    ["run.code.modules.crafted_payload"],
])
def test_a_name_that_would_reach_code_outside_the_environment_needs_trust(imports, crafted, monkeypatch, capsys):
    run, marker = crafted
    outer = run.parent / "outer"
    shutil.copytree(run, outer / "run")
    target = outer / "run" if imports[0].startswith("outer") else run
    set_imports(target, imports)
    monkeypatch.chdir(run.parent)
    monkeypatch.syspath_prepend(str(run.parent))  # as `python -m cadence` run from the parent folder
    monkeypatch.setattr(sys, "argv", ["cadence", "eval", str(target)])
    assert main(["eval", str(target)]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and "--trust-code" in line and imports[0] in line, line
    assert not marker.exists() and not (run.parent / "eval").exists()  # nothing ran, nothing was made


def test_only_installed_or_pythonpath_packages_count_as_the_users(tmp_path, monkeypatch):
    from cadence.config.rebuild import _importable_without_the_folder as importable

    package = tmp_path / "pythonpath" / "lab_components"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "pythonpath"))
    monkeypatch.syspath_prepend(str(tmp_path / "pythonpath"))
    elsewhere = tmp_path / "downloads" / "run"
    assert importable("lab_components", "lab_components", elsewhere)  # found, nothing imported
    assert "lab_components" not in sys.modules
    assert not importable("lab_components", "lab_components", package / "runs" / "run")  # the package holds the folder
    monkeypatch.delenv("PYTHONPATH")
    assert not importable("lab_components", "lab_components", elsewhere)  # on sys.path, but not the user's setting


def test_a_symbolic_link_in_the_folder_is_never_appended_through(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    (run / "train.log").unlink()
    (run / "train.log").symlink_to(victim)
    assert main(["resume", str(run), "trainer.max_epochs=3"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "train.log" in line and "symbolic link" in line, line
    assert victim.read_text() == "mine\n"


def test_a_resumed_folder_without_provenance_runs_no_git_of_the_current_folder(trained_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "provenance.json").unlink()
    marker = tmp_path / "git-ran-a-command"
    subprocess.run(["git", "init", "-q", str(run)], check=True)
    # A repository whose own config makes git run a command on status and diff.
    subprocess.run(["git", "-C", str(run), "config", "core.fsmonitor", f"touch {marker}; false"], check=True)
    subprocess.run(["git", "-C", str(run), "config", "diff.external", f"sh -c 'touch {marker}'"], check=True)
    monkeypatch.chdir(run)
    assert main(["resume", str(run), "trainer.max_epochs=3"]) == 0
    assert not marker.exists()
    assert json.loads((run / "provenance.json").read_text())["git"]["cwd"] == {"repository": None}


def replace_the_model_state(checkpoint: Path) -> None:
    """An object-like payload where the model's tensors were, signed again."""
    edit_state(checkpoint, lambda state: state.__setitem__("task", {"__class__": "os.system", "args": ["touch pwned"]}))


def test_a_state_that_does_not_fit_falls_back_or_is_named(trained_run, tmp_path, capsys, caplog):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    best, other = checkpoints_in_order(run / "checkpoints", best=True)
    replace_the_model_state(best)
    with caplog.at_level(logging.WARNING, logger="cadence"):
        assert main(["eval", str(run)]) == 0  # the other checkpoint, with a warning naming the crafted one
    assert json.loads(capsys.readouterr().out)["checkpoint"] == str(other)
    assert any(str(best) in record.getMessage() and "does not fit" in record.getMessage() for record in caplog.records)
    assert cadence.load(run).config["name"] == "fsdd-asr-ds2"

    capsys.readouterr()
    assert main(["eval", str(best)]) == 2  # named alone: an error naming it and what did not fit
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(best) in error and "unexpected __class__" in error, error
    with pytest.raises(CheckpointError, match="missing model."):
        cadence.load(best)


CRAFTED_STATES = {
    "model": lambda state: state.__setitem__("task", {"__class__": "os.system", "args": ["touch pwned"]}),
    "no model": lambda state: state.__setitem__("task", None),
    "trainer state": lambda state: state["trainer_state"].__setitem__("epoch", "x"),
    "optimizer": lambda state: swap_first_moment(state["optimizer"]["state"]["__dict__"]),
}


def swap_first_moment(per_parameter: list) -> None:
    """The first parameter's Adam moment pointed at the last one's tensor: another shape."""
    per_parameter[0][1]["exp_avg"] = per_parameter[-1][1]["exp_avg"]


@pytest.mark.parametrize("crafted_part", sorted(CRAFTED_STATES))
def test_a_resume_skips_a_newest_state_that_does_not_fit(crafted_part, trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    older, newest = checkpoints(run)
    edit_state(newest, CRAFTED_STATES[crafted_part])
    assert main(["resume", str(run), "trainer.max_epochs=3"]) == 0  # continues from the older one
    assert json.loads((run / "provenance.json").read_text())["resumes"][-1]["checkpoint"] == str(older)
    # The crafted one was newer than the checkpoint resumed from: set aside, not deleted.
    assert any(path.name.startswith(newest.name) for path in (run / "checkpoints" / ".abandoned").iterdir())
    assert main(["resume", str(run), "--from", str(older), "trainer.max_epochs=3"]) == 0
