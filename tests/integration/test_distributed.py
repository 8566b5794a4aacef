"""Training on several processes, started by torchrun (gloo on CPU): the same training as one
process, only rank 0 writes, nothing hangs, and a killed rank restarts into the same result.

Every run has a timeout, and ``CADENCE_DIST_TIMEOUT_S`` bounds each collective, so a hang
fails the test instead of stopping the suite.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import torch
import yaml
from safetensors.torch import load_file

from cadence.checkpoint.checkpointer import find_checkpoint
from cadence.checkpoint.format import load_checkpoint
from cadence.data.manifest import ManifestEntry, write_manifest

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parents[1]
DIGITS = str(REPOSITORY / "recipes" / "fsdd" / "digits.yaml")
WORKER = str(HERE / "distributed_worker.py")
SMALL = ["data.max_train_utterances=240", "data.max_eval_utterances=60", "trainer.progress_bar=false"]
BATCHES = [8, 8, 8, 8, 8, 3]  # six batches: three turns of two processes, the last one short


def environment(fsdd_root: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CADENCE_DIST_TIMEOUT_S": "60", "CADENCE_FSDD_ROOT": str(fsdd_root)}


def torchrun(arguments: list[str], fsdd_root: Path, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", *arguments]
    return subprocess.run(command, env={**environment(fsdd_root), **(extra or {})}, capture_output=True, text=True,
                          timeout=240, cwd=REPOSITORY)


def run_workers(specs: dict[str, dict], out: Path, fsdd_root: Path, processes: int) -> dict[str, Any]:
    """Each run of ``specs`` (one torchrun launch for all): rank 0's weights and counts, by
    name, and the launch's log (``"log"``)."""
    finished = torchrun(["--standalone", f"--nproc-per-node={processes}", WORKER, json.dumps(specs), str(out)], fsdd_root)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return {"log": finished.stderr, **{name: {"weights": load_file(str(out / name / "weights.safetensors")),
                                              **json.loads((out / name / "result.json").read_text())} for name in specs}}


def assert_close(first: dict, second: dict, exact: bool = False) -> None:
    for name, value in first.items():
        if exact:
            assert torch.equal(value, second[name]), name
        else:
            torch.testing.assert_close(value, second[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def two_processes(fsdd_root, tmp_path_factory) -> dict[str, dict]:
    return run_workers({
        "plain": {"batch_sizes": BATCHES, "epochs": 2},
        "empty": {"batch_sizes": BATCHES, "empty": [3]},
        "poisoned": {"batch_sizes": BATCHES, "poison": [3], "on_nonfinite": "skip"},
        "turn_left_out": {"batch_sizes": BATCHES, "drop": [2, 3]},
        "sharded": {"batch_sizes": BATCHES, "epochs": 2, "parallel": "fsdp"},
        "accumulated": {"batch_sizes": BATCHES, "accumulate": 2},
    }, tmp_path_factory.mktemp("two"), fsdd_root, processes=2)


@pytest.fixture(scope="module")
def one_process(fsdd_root, tmp_path_factory) -> dict[str, dict]:
    return run_workers({
        "plain": {"batch_sizes": BATCHES, "epochs": 2, "join": 2},
        "empty": {"batch_sizes": BATCHES, "empty": [3], "join": 2},
        "accumulated": {"batch_sizes": BATCHES, "join": 4},
    }, tmp_path_factory.mktemp("one"), fsdd_root, processes=1)


@pytest.mark.parametrize("run, steps", [
    # The last turn joins 8 and 3 utterances: the update is the mean over all 11, not a mean of two means.
    ("plain", 6),
    # An empty batch on rank 1 (global batch 3) takes no share of its update and does not hang.
    ("empty", 6),
    # Accumulating 2: rank 0 takes batches 0 and 2, rank 1 takes 1 and 3 (no all-reduce on the
    # first of each, DDP's no_sync), then 4 and 5: one process joining 0-3, then 4-5.
    ("accumulated", 4),
])
def test_two_processes_train_as_one_process_with_each_updates_batches_joined(two_processes, one_process, run, steps):
    two, one = two_processes[run], one_process[run]
    assert two["global_step"] == one["global_step"] == steps
    assert_close(two["weights"], one["weights"])


def test_fsdp_shards_the_parameters_and_trains_as_ddp(two_processes):
    sharded, replicated = two_processes["sharded"], two_processes["plain"]
    assert sharded["parameter_types"] == ["DTensor"] and replicated["parameter_types"] == ["Parameter"]
    assert sharded["global_step"] == replicated["global_step"] == 6
    assert_close(sharded["weights"], replicated["weights"])  # saved whole, under the model's own names


def test_a_nan_on_one_process_is_skipped_by_both_as_if_that_turn_was_left_out(two_processes):
    skipped, left_out = two_processes["poisoned"], two_processes["turn_left_out"]
    # Both name the poisoned batch (rank 1's, global batch 3: 0_george_30 to 0_george_37), not rank 0's.
    assert "skipped a batch after step 1 (epoch 1): its loss or gradient norm is NaN or infinite; utterances " \
           "0_george_30, 0_george_31," in two_processes["log"]
    assert skipped["skipped_batches"] == 2 and skipped["global_step"] == left_out["global_step"] == 4  # once an epoch
    assert_close(skipped["weights"], left_out["weights"], exact=True)


def test_a_nan_on_one_process_stops_every_process_naming_the_step_and_its_utterances(fsdd_root, tmp_path):
    specs = {"error": {"batch_sizes": BATCHES, "poison": [3]}}  # rank 1's second batch: the second step
    failed = torchrun(["--standalone", "--nproc-per-node=2", WORKER, json.dumps(specs), str(tmp_path)], fsdd_root)
    assert failed.returncode != 0
    message = "the training loss became NaN or infinite at step 2; utterances 0_george_30, 0_george_31"
    assert failed.stderr.count(message) == 2, failed.stderr[-3000:]  # both ranks, the same words


def run_files(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file())


def test_two_processes_on_the_cli_write_one_folder_and_evaluate_as_one_process(fsdd_root, tmp_path):
    directory = tmp_path / "run"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    finished = torchrun(["--standalone", "--nproc-per-node=2", "-m", "cadence", "train", DIGITS, *SMALL,
                         "trainer.max_epochs=2", "--exp-dir", str(directory)], fsdd_root, extra={"TMPDIR": str(scratch)})
    assert finished.returncode == 0, finished.stderr[-3000:]
    results = json.loads((directory / "results.json").read_text())
    assert not any("rank" in name for name in run_files(directory))  # no file of another process
    assert not list(scratch.glob("cadence-rank*"))  # the other process's scratch folder is gone
    lines = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    assert len([line for line in lines if "val/accuracy" in line]) == 2  # one writer: each epoch once
    state, _ = load_checkpoint(find_checkpoint(directory))
    assert len(state["ranks"]) == 2 and set(state["ranks"][1]) == {"epoch_sums", "train_data", "train_metrics", "rng"}
    # The best epoch's validation, summed over both processes' shares, is one process's evaluation.
    evaluated = subprocess.run([sys.executable, "-m", "cadence", "eval", results["final_checkpoint"], "--split", "valid"],
                               env=environment(fsdd_root), capture_output=True, text=True, timeout=240, cwd=REPOSITORY)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    single = json.loads(evaluated.stdout)
    assert single["metrics"]["valid/accuracy"] == pytest.approx(results["best_validation"]["val/accuracy"], abs=1e-12)
    assert single["metrics"]["valid/loss"] == pytest.approx(results["best_validation"]["val/loss"], rel=1e-5)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_torchrun_agents_as_two_nodes_train_a_recipe_to_the_end(fsdd_root, tmp_path):
    port = free_port()
    agents = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", f"--node-rank={node}",
             "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=cadence-test", "-m", "cadence", "train",
             DIGITS, *SMALL, "trainer.max_epochs=2", "--exp-dir", str(tmp_path / "run")],
            env=environment(fsdd_root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPOSITORY,
        )
        for node in (0, 1)
    ]
    outputs = [agent.communicate(timeout=240) for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["best_epoch"] is not None and len(load_checkpoint(find_checkpoint(tmp_path / "run"))[0]["ranks"]) == 2


def worker_of_rank(agent: int, rank: int) -> int | None:
    """The pid of the torchrun worker of ``rank`` started by the agent ``agent``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            variables = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == agent and f"RANK={rank}".encode() in variables:
            return int(entry.name)
    return None


def test_a_rank_killed_with_sigkill_restarts_and_ends_bit_identical(fsdd_root, tmp_path):
    settings = ["data.max_train_utterances=480", "data.max_eval_utterances=60", "trainer.progress_bar=false",
                "trainer.max_epochs=2", "checkpoint.every_steps=1", "checkpoint.keep_last=2"]

    def command(directory: Path) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--max-restarts=1",
                "-m", "cadence", "train", DIGITS, *settings, "--exp-dir", str(directory)]

    whole = subprocess.run(command(tmp_path / "whole"), env=environment(fsdd_root), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    agent = subprocess.Popen(command(tmp_path / "killed"), env=environment(fsdd_root), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 120
    while not any(path.name >= "step-000000006" for path in checkpoints.glob("step-*")):
        assert time.monotonic() < deadline and agent.poll() is None, "no checkpoint of step 6 appeared"
        time.sleep(0.02)
    victim = worker_of_rank(agent.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    _, errors = agent.communicate(timeout=300)
    assert agent.returncode == 0, errors[-3000:]
    assert "restarted by torchrun: resuming" in errors  # it did restart, and resumed
    finished = json.loads((tmp_path / "killed" / "results.json").read_text())
    uninterrupted = json.loads((tmp_path / "whole" / "results.json").read_text())
    first, second = load_checkpoint(Path(finished["final_checkpoint"]))[0], load_checkpoint(Path(uninterrupted["final_checkpoint"]))[0]
    assert first["trainer_state"]["global_step"] == second["trainer_state"]["global_step"]
    assert_close(first["task"], second["task"], exact=True)
    assert_close(first["optimizer"]["state"][0], second["optimizer"]["state"][0], exact=True)


def test_fp16_resumes_bit_identical_with_its_grad_scaler(fsdd_root):
    finished = subprocess.run(
        [sys.executable, "-m", "cadence", "verify-resume", DIGITS, "data.max_train_utterances=120", "data.max_eval_utterances=30",
         "trainer.precision=fp16", "--steps", "8"], env=environment(fsdd_root), capture_output=True, text=True, timeout=240, cwd=REPOSITORY)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    assert json.loads(finished.stdout)["identical"] is True


def test_compiled_models_save_their_own_parameter_names_and_train_as_eager(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    from cadence import ClassificationTask, Trainer

    data = TensorDataset(torch.randn(64, 6, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 3)
    trained = {}
    for compile_model in (False, True):
        torch.manual_seed(0)
        task = ClassificationTask(torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)))
        trainer = Trainer(task, torch.optim.SGD(task.parameters(), lr=0.1), max_epochs=2, compile=compile_model,
                          progress_bar=False, device="cpu")
        trainer.fit(DataLoader(data, batch_size=16))
        trained[compile_model] = task.state_dict()
    assert list(trained[True]) == ["model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias"]  # no _orig_mod.
    assert_close(trained[True], trained[False])


def test_fsdp_checkpoints_are_whole_and_resume_exactly(fsdd_root, tmp_path):
    settings = [*SMALL, "trainer.parallel=fsdp"]

    def run(*arguments: str) -> None:
        finished = torchrun(["--standalone", "--nproc-per-node=2", "-m", "cadence", *arguments], fsdd_root)
        assert finished.returncode == 0, finished.stderr[-3000:]

    run("train", DIGITS, *settings, "trainer.max_epochs=3", "--exp-dir", str(tmp_path / "whole"))
    run("train", DIGITS, *settings, "trainer.max_epochs=2", "--exp-dir", str(tmp_path / "resumed"))
    run("resume", str(tmp_path / "resumed"), "trainer.max_epochs=3")
    whole, _ = load_checkpoint(find_checkpoint(tmp_path / "whole"))
    resumed, _ = load_checkpoint(find_checkpoint(tmp_path / "resumed"))
    assert whole["trainer_state"]["global_step"] == resumed["trainer_state"]["global_step"] == 12
    assert list(whole["task"]) == list(resumed["task"]) and "model.convolutions.0.weight" in whole["task"]
    assert_close(whole["task"], resumed["task"], exact=True)
    # The optimizer's state is whole too, keyed by parameter name.
    assert_close(whole["optimizer"]["state"]["model.convolutions.0.weight"],
                 resumed["optimizer"]["state"]["model.convolutions.0.weight"], exact=True)


def test_a_batch_of_only_bad_audio_on_one_process_is_quarantined_by_rank_zero_and_nothing_hangs(fsdd_root, tmp_path):
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    recordings = sorted((fsdd_root / "recordings").glob("*.wav"))[::150][:16]
    good = sorted((soundfile.info(path).duration, path) for path in recordings)
    # Four NaN files as long as fall between the 4th and 5th shortest: sorted batches of 4 make
    # them the global plan's second batch, rank 1's first (5 batches, wrapped to 6: 3 a process).
    seconds = (good[3][0] + good[4][0]) / 2
    bad = []
    for index in range(4):
        path = tmp_path / "audio" / f"{index}_nan_{index}.wav"
        path.parent.mkdir(exist_ok=True)
        soundfile.write(path, np.full(int(seconds * 8000), np.nan, dtype=np.float32), 8000, subtype="FLOAT")
        bad.append(path)
    entries = [ManifestEntry(id=path.stem, audio=path, duration=soundfile.info(path).duration, label=words[int(path.name[0])])
               for path in [path for _, path in good] + bad]
    write_manifest(tmp_path / "train.jsonl", entries)
    write_manifest(tmp_path / "valid.jsonl", entries[:4])
    recipe = {
        "name": "bad-batch", "seed": 0,
        "data": {"name": "manifests", "sample_rate": 8000, "max_skip_rate": 0.5, "train": str(tmp_path / "train.jsonl"),
                 "valid": str(tmp_path / "valid.jsonl"), "batching": {"max_seqs": 4, "max_frames": None, "ordering": "sorted"}},
        "features": {"name": "log_mel"},
        "model": {"name": "cnn_classifier", "channels": 8, "layers": 1},
        "trainer": {"max_epochs": 2, "progress_bar": False},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    finished = torchrun(["--standalone", "--nproc-per-node=2", "-m", "cadence", "train", str(tmp_path / "recipe.yaml"),
                         "--exp-dir", str(tmp_path / "run")], fsdd_root)
    assert finished.returncode == 0, finished.stderr[-3000:]
    state, _ = load_checkpoint(find_checkpoint(tmp_path / "run"))
    assert state["trainer_state"]["global_step"] == 6  # 3 steps an epoch on both processes
    quarantined = [json.loads(line)["id"] for line in (tmp_path / "run" / "quarantine.jsonl").read_text().splitlines()]
    assert sorted(quarantined) == sorted(path.stem for path in bad)  # met by rank 1, written by rank 0
    assert not list((tmp_path / "run").glob("quarantine.rank*"))
    assert [rank["train_data"]["skipped_in_epoch"] for rank in state["ranks"]] == [0, 0]  # saved between epochs
