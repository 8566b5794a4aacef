"""Provenance: what is needed to know exactly how a run was made.

Collected once at the start of a run into ``provenance.json``: the command line, the git
commit, dirty flag and diff of the code, Python / torch / package versions, hardware,
seed, data manifests' hashes; the run's entry point (its recipe, or the calling script of a
run built in Python) and the user's own modules are copied into ``code/`` beside it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from cadence.runtime.files import data_file_sha256

PACKAGES = ("cadence", "torch", "numpy", "soundfile", "soxr", "pyyaml", "pydantic", "safetensors", "tensorboard", "tqdm", "rapidfuzz")
MAX_DIFF_BYTES = 2_000_000  # a larger diff is truncated in provenance, not dropped silently


# A repository's own config can make git run commands (an fsmonitor hook, an external diff, a
# textconv): none of them, for a record that only reads.
_GIT_WITHOUT_HOOKS = ["-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"]


def _git(arguments: list[str], cwd: Path) -> str | None:
    try:
        completed = subprocess.run(
            ["git", *_GIT_WITHOUT_HOOKS, *arguments], cwd=cwd, capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout if completed.returncode == 0 else None


def git_info(directory: Path) -> dict[str, Any]:
    """Commit, dirty flag and diff against HEAD of the repository holding ``directory``."""
    root = _git(["rev-parse", "--show-toplevel"], directory)
    if root is None:
        return {"repository": None}
    root_path = Path(root.strip())
    diff = _git(["diff", "HEAD", "--no-color", "--no-ext-diff", "--no-textconv"], root_path) or ""
    status = _git(["status", "--porcelain", "--untracked-files=no"], root_path) or ""
    return {
        "repository": str(root_path),
        "commit": (_git(["rev-parse", "HEAD"], root_path) or "").strip() or None,
        "dirty": bool(status.strip()),
        "diff": diff[:MAX_DIFF_BYTES],
        "diff_truncated": len(diff) > MAX_DIFF_BYTES,
    }


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())],
    }
    return info


def collect_provenance(
    seed: int | None, config_sha256: str | None, data_files: dict[str, Path] | None = None, git_of_cwd: bool = True,
) -> dict[str, Any]:
    """Everything that says how a run was made. ``git_of_cwd=False`` leaves out the repository of
    the current folder: for a folder someone gave you, it may be theirs, and git runs what a
    repository's config (a clean filter) says."""
    code_directory = Path(__file__).resolve().parent
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "seed": seed,
        "config_sha256": config_sha256,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "hardware": hardware(),
        "git": {"cadence": git_info(code_directory), "cwd": git_info(Path.cwd()) if git_of_cwd else {"repository": None}},
        "data": {name: {"path": str(path), "sha256": data_file_sha256(path)} for name, path in (data_files or {}).items()},
    }


def snapshot_code(destination: Path, entry_point: Path | None, modules: dict[str, ModuleType]) -> list[str]:
    """Copy the entry point (a recipe or a script) and the user's modules, by the name a rebuild
    imports them by (file or whole package), into ``destination``; return the copied paths."""
    destination.mkdir(parents=True, exist_ok=True)
    copied = []
    if entry_point is not None:
        if Path(entry_point).resolve() != (destination / entry_point.name).resolve():  # not already the copy
            shutil.copy2(entry_point, destination / entry_point.name)
        copied.append(entry_point.name)
    for name, module in modules.items():
        source = Path(getattr(module, "__file__", "") or "")
        if not source.is_file():
            continue
        if source.name == "__init__.py":  # a package: copy all of it
            target = destination / "modules" / name
            shutil.copytree(source.parent, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target = destination / "modules" / f"{name}.py"
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.resolve() != target.resolve():  # a rebuilt run's module is already the copy
                shutil.copy2(source, target)
        copied.append(str(target.relative_to(destination)))
    return copied
