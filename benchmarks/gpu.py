"""GPU figures for the DeepSpeech2 recipe (recipes/fsdd/asr_ds2.yaml, FSDD connected digits).

Four measurements (issue 12, item 7), each a field of the one JSON object printed:

- ``ddp``: ``torchrun --standalone --nproc-per-node W -m cadence train recipes/fsdd/asr_ds2.yaml``,
  as a user launches it (plus ``trainer.max_steps``, ``trainer.log_every`` and no progress bar),
  for W = 1 and W = every GPU present (nccl; gloo on CPU).
  Reported: the launch's wall time, fit's wall time (results.json), and steps per second from
  the run's own metrics.jsonl: the train lines come every ``log_every`` steps, each after a
  ``.item()`` that waits for the device, so the time between two of them in the same epoch is
  the training time of those steps (intervals that hold a validation are left out, and so is
  the warm-up). Batches per second count every process's batches: the scaling figure.
- ``bf16``: in one process, the same initial weights and the same fixed batches (already on the
  device) trained with ``precision=32`` and ``precision="bf16"`` in alternating rounds; the
  median over rounds of bf16's time per step divided by float32's.
- ``data_wait``: the share of the training step spent waiting for the data, on the recipe's real
  train loader. Two readings: ``share_synchronized`` waits for the device at every batch's start
  and end, so the gap between one batch's end and the next one's start (the loader's ``next()``
  and the copy to the device) is time the device sat idle: an upper bound. ``share_of_wall_in_next``
  times the loader's ``next()`` alone, without extra waits, against the wall time of the same
  steps (the CPU may load while the device still computes). Target: at most 5%.
- ``compile``: ``trainer.compile`` true against false on the same fixed batches, alternating
  rounds; steps per second after a warm-up of ``--warmup`` steps, the compile cost reported
  apart (the compiled warm-up's time minus the eager warm-up's). Batches differ in length
  (bucketed), so compiled code is specialised then made dynamic during the warm-up.

Plus torch's version, the GPUs' names and count. A part that fails is reported as its error
and the others still run; ``--json-out`` keeps the object as it grows (a killed run leaves the
parts done). Data: FSDD is found as the recipes find it (``--fsdd-root`` or
``CADENCE_FSDD_ROOT``, ../shared/data/fsdd beside the checkout, the cache); the generated
connected-digits corpus is made once, before anything is timed (its time reported apart).

    python benchmarks/gpu.py [--only ddp bf16 data compile] [--world-sizes 1 N] [--ddp-steps 200]
        [--rounds 5] [--steps 40] [--warmup 10] [--compile-rounds 3] [--fsdd-root DIR]
        [--json-out FILE] [--override KEY=VALUE ...] [--allow-cpu]

Expected duration of the defaults on one H200: about 3 to 5 minutes, most of it process
start-up, data loading and the first torch.compile (generating the corpus adds about half a
minute when its cache is empty; each further world size adds a launch of about a minute).
Without CUDA it says so in one line and exits with status 2; ``--allow-cpu`` runs every part on
the CPU with tiny step counts and a cut-down recipe, to check the code paths (not the figures).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

REPOSITORY = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("cadence") is None:
    # Run from a checkout where cadence is not installed (a bare GPU machine): use the checkout's.
    sys.path.insert(0, str(REPOSITORY))

from cadence.callbacks.base import Callback  # noqa: E402
from cadence.checkpoint.rng import seed_everything  # noqa: E402
from cadence.config.build import build, build_data  # noqa: E402
from cadence.config.resolve import resolve  # noqa: E402
from cadence.config.schema import load_recipe  # noqa: E402
from cadence.corpora.connected_digits import prepare_connected_digits  # noqa: E402
from cadence.runtime.device import move_to_device  # noqa: E402
from cadence.runtime.process import apply_process_settings  # noqa: E402

RECIPE = REPOSITORY / "recipes" / "fsdd" / "asr_ds2.yaml"
TARGET_DATA_WAIT_SHARE = 0.05
PHASES = ("ddp", "bf16", "data", "compile")

# Step counts per device kind; an explicit option wins. The CPU ones only exercise the code.
DEFAULTS = {
    "gpu": {"ddp_steps": 200, "rounds": 5, "steps": 40, "warmup": 10, "compile_rounds": 3, "data_steps": 150, "log_every": 5},
    "cpu": {"ddp_steps": 4, "rounds": 2, "steps": 3, "warmup": 1, "compile_rounds": 1, "data_steps": 4, "log_every": 1},
}
# On the CPU the recipe is cut down to check the code paths in a few minutes: preloading 4,000
# utterances, testing on 500 per process and the full model's steps (seconds each) would not fit.
CPU_OVERRIDES = [
    "data.max_train_utterances=200", "data.max_eval_utterances=16", "data.batching.max_frames=1500",
    "model.rnn_hidden=24", "model.rnn_layers=1", "model.conv_channels=4",
]


# ---------------------------------------------------------------------------- timing helpers


def wait_for_device(device: torch.device) -> None:
    """Block until the device has run every queued kernel, so a clock read after it is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class LoopClock(Callback):
    """Times the training loop after ``warmup`` steps.

    With ``every_step`` it waits for the device at every batch's start and end, so each gap
    between a batch's end and the next batch's start (``next()`` on the loader, the copy to
    the device) is time the device spent idle; otherwise it waits only at the warm-up's end
    and at the last step, which leaves the loop's own overlap of CPU and device alone.
    """

    def __init__(self, warmup: int, every_step: bool = False, loader_timer: TimedIterable | None = None):
        self.warmup = warmup
        self.every_step = every_step
        self.loader_timer = loader_timer  # its next() timing starts with the timed steps
        self.fit_started = self.warm_end = self.last_end = None
        self.steps_timed = 0
        self.gaps_s = 0.0
        self.graphs_at_warm_end = self.graphs_at_end = None  # torch.compile's graph count

    def on_fit_start(self, trainer):
        wait_for_device(trainer.device)
        self.fit_started = time.perf_counter()

    def on_batch_start(self, trainer, batch):
        if self.every_step:
            wait_for_device(trainer.device)
        if self.warm_end is not None and self.last_end is not None:
            self.gaps_s += time.perf_counter() - self.last_end

    def on_batch_end(self, trainer, output):
        step = trainer.state.global_step
        if self.every_step or step in (self.warmup, trainer.max_steps):
            wait_for_device(trainer.device)
        now = time.perf_counter()
        if step == self.warmup:
            self.warm_end = now
            self.graphs_at_warm_end = dynamo_unique_graphs()
            if self.loader_timer is not None:
                self.loader_timer.counting = True
        elif self.warm_end is not None:
            self.steps_timed += 1
        if step == trainer.max_steps:
            self.graphs_at_end = dynamo_unique_graphs()
        self.last_end = now

    def warmup_s(self) -> float:
        return self.warm_end - self.fit_started

    def timed_s(self) -> float:
        return self.last_end - self.warm_end

    def step_s(self) -> float:
        return self.timed_s() / self.steps_timed


class TimedIterable:
    """Wraps the train loader's batches and adds up the time spent inside ``next()`` once
    ``counting`` is set (the Trainer's own loader, with its epoch and cursor, stays in place)."""

    def __init__(self, batches: Iterable):
        self.batches = batches
        self.counting = False
        self.seconds = 0.0
        self.calls = 0

    def __iter__(self) -> Iterator[Any]:
        iterator = iter(self.batches)
        while True:
            started = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            if self.counting:
                self.seconds += time.perf_counter() - started
                self.calls += 1
            yield batch


# ---------------------------------------------------------------------------- building runs


def recipe_overrides(arguments, *extra: str) -> list[str]:
    """The overrides every run of this benchmark shares, then the part's own."""
    cpu = [] if arguments.device_kind == "gpu" else CPU_OVERRIDES
    return [*cpu, "trainer.progress_bar=false", *arguments.override, *extra]


def resolved_recipe(overrides: list[str]):
    return resolve(load_recipe(RECIPE, overrides))


def build_in_process(overrides: list[str], work_dir: Path, data=None):
    """The recipe's objects, as ``cadence train`` builds them (process settings, then the seed,
    then everything), without an experiment folder. Seeding before each build gives every
    contender the same initial weights and the same random draws while training."""
    resolved = resolved_recipe(overrides)
    apply_process_settings(**resolved.process_settings())
    seed_everything(resolved.config.seed)
    return build(resolved, None, work_dir=work_dir, data=data)


def prepare_corpus(arguments) -> float:
    """Generate (or find in the cache) the connected-digits corpus the recipe reads, before
    anything is timed and before several processes would all try to make it at once."""
    data = resolved_recipe(recipe_overrides(arguments)).components["data"].parameters
    started = time.perf_counter()
    prepare_connected_digits(data["root"], seed=data["corpus_seed"], sizes=tuple(data["corpus_sizes"]))
    return time.perf_counter() - started


def fixed_batches(train_loader, count: int, device: torch.device) -> list:
    """The first ``count`` batches of the epoch's plan, moved to the device once: the precision
    and compile comparisons then time computation only, on identical inputs."""
    batches = []
    for batch in train_loader:
        batches.append(move_to_device(batch, device))
        if len(batches) == count:
            break
    if len(batches) < count:
        raise RuntimeError(f"the train loader gave {len(batches)} batches, fewer than the {count} asked for")
    return batches


def timed_fit(arguments, shared, override: str, batches: list) -> LoopClock:
    """A fresh run (same seed, so same initial weights) with ``override``, trained on ``batches``."""
    built = build_in_process(recipe_overrides(arguments, f"trainer.max_steps={len(batches)}", override), shared.work_dir, shared.data)
    clock = LoopClock(arguments.warmup)
    built.trainer.callbacks.append(clock)
    built.trainer.fit(batches)
    return clock


def alternating_rounds(arguments, shared, rounds: int, contenders: dict[str, str]) -> dict[str, list[LoopClock]]:
    """Train every contender (a name and its override) once per round on the same fixed
    batches, the order reversed every other round so that slow drifts of the machine (clocks,
    temperature) hit all alike."""
    batches = shared.batches(arguments.warmup + arguments.steps)
    clocks: dict[str, list[LoopClock]] = {name: [] for name in contenders}
    for index in range(rounds):
        names = list(contenders) if index % 2 == 0 else list(contenders)[::-1]
        for name in names:
            clocks[name].append(timed_fit(arguments, shared, contenders[name], batches))
    return clocks


# ---------------------------------------------------------------------------- the parts


def measure_ddp(arguments, scratch: Path) -> dict[str, Any]:
    """One torchrun launch per world size, and the scaling of batches per second against one process."""
    runs = [ddp_run(arguments, world, scratch / f"ddp-{world}") for world in arguments.world_sizes]
    report: dict[str, Any] = {"backend": "nccl" if arguments.device_kind == "gpu" else "gloo", "runs": runs}
    one = next((run for run in runs if run["world_size"] == 1 and "steps_per_s" in run), None)
    for run in runs:
        if one is not None and "global_batches_per_s" in run and run["world_size"] > 1:
            # 1.0: N processes take N times the batches of one in the same time.
            run["scaling_efficiency"] = round(run["global_batches_per_s"] / (run["world_size"] * one["global_batches_per_s"]), 4)
    return report


def ddp_command(arguments, world: int, exp_dir: Path) -> list[str]:
    overrides = recipe_overrides(arguments, f"trainer.max_steps={arguments.ddp_steps}", f"trainer.log_every={arguments.log_every}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
            "-m", "cadence", "train", str(RECIPE), *overrides, "--exp-dir", str(exp_dir)]


def ddp_environment(arguments, world: int) -> dict[str, str]:
    # The checkout's cadence for the workers too, installed or not.
    python_path = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": python_path}
    if arguments.device_kind == "cpu":
        # The CPU's cores shared among the processes (torchrun would give each one thread).
        environment["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // world))
    return environment


def ddp_run(arguments, world: int, exp_dir: Path) -> dict[str, Any]:
    """One torchrun launch of ``cadence train``; its wall time and steps per second."""
    command = ddp_command(arguments, world, exp_dir)
    started = time.perf_counter()
    finished = run_process_group(command, ddp_environment(arguments, world), arguments.ddp_timeout_s)
    wall = time.perf_counter() - started
    report: dict[str, Any] = {"world_size": world, "process_wall_s": round(wall, 2)}
    if finished is None:
        return {**report, "error": f"timed out after {arguments.ddp_timeout_s} s (the launch and its processes were ended)"}
    if finished.returncode != 0:
        return {**report, "error": f"exit status {finished.returncode}", "stderr_tail": finished.stderr[-3000:]}
    results = json.loads((exp_dir / "results.json").read_text())
    report["fit_wall_s"] = round(results.get("wall_time_s", float("nan")), 2)
    report.update(steps_per_second_from_metrics(exp_dir / "metrics.jsonl", arguments.warmup))
    if "steps_per_s" in report:
        report["global_batches_per_s"] = round(report["steps_per_s"] * world, 3)
    return report


def run_process_group(command: list[str], environment: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess | None:
    """Run ``command`` in a session of its own; on timeout end that session (torchrun and the
    workers it started, nothing else) and return None."""
    process = subprocess.Popen(command, cwd=REPOSITORY, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def steps_per_second_from_metrics(metrics_path: Path, warmup: int) -> dict[str, Any]:
    """Steps per second from the train lines of metrics.jsonl: consecutive lines of one epoch
    after the warm-up (a pair across an epoch's end also holds a validation, and is left out)."""
    lines = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    train = [line for line in lines if line.get("split") == "train" and line["step"] >= warmup]
    steps = seconds = 0.0
    for before, after in zip(train, train[1:]):
        if after["epoch"] == before["epoch"] and after["step"] > before["step"]:
            steps += after["step"] - before["step"]
            seconds += after["time"] - before["time"]
    if steps == 0 or seconds <= 0:
        return {"steps_timed": 0, "note": "too few train log lines after the warm-up within one epoch; raise --ddp-steps"}
    return {"steps_timed": int(steps), "steps_per_s": round(steps / seconds, 3)}


def measure_bf16(arguments, shared) -> dict[str, Any]:
    """bf16 autocast against float32: same weights, same batches, alternating rounds."""
    # On the CPU, bf16 autocast is tried as it is (a failure is reported as this part's error).
    if arguments.device_kind == "gpu" and not torch.cuda.is_bf16_supported():
        return {"supported": False, "note": "this GPU has no bfloat16 support; not measured"}
    rounds = alternating_rounds(arguments, shared, arguments.rounds, {"32": "trainer.precision=32", "bf16": "trainer.precision=bf16"})
    step_s = {name: [clock.step_s() for clock in clocks] for name, clocks in rounds.items()}
    ratio = statistics.median(bf16 / fp32 for bf16, fp32 in zip(step_s["bf16"], step_s["32"]))
    return {
        "supported": True, "rounds": arguments.rounds, "timed_steps_per_round": arguments.steps,
        "median_step_ms": {name: round(1000 * statistics.median(times), 3) for name, times in step_s.items()},
        "median_ratio_bf16_to_fp32": round(ratio, 4), "bf16_speedup": round(1 / ratio, 4),
    }


def measure_data_wait(arguments, shared) -> dict[str, Any]:
    """Two fits on the recipe's real train loader: one waiting for the device at every batch
    (idle gaps), one timing ``next()`` alone."""
    total_steps = arguments.warmup + arguments.data_steps
    synchronized = loader_fit(arguments, shared, total_steps, every_step=True)
    free_running = loader_fit(arguments, shared, total_steps, every_step=False)
    share = synchronized["clock"].gaps_s / synchronized["clock"].timed_s()
    share_in_next = free_running["loader"].seconds / free_running["clock"].timed_s()
    return {
        "timed_steps": synchronized["clock"].steps_timed,
        "share_synchronized": round(share, 4),
        "share_of_wall_in_next": round(share_in_next, 4),
        "step_ms_synchronized": round(1000 * synchronized["clock"].step_s(), 3),
        "step_ms_free_running": round(1000 * free_running["clock"].step_s(), 3),
        "num_workers": shared.data_parameters.get("num_workers"),
        "target_max_share": TARGET_DATA_WAIT_SHARE,
        "meets_target": share <= TARGET_DATA_WAIT_SHARE,
    }


def loader_fit(arguments, shared, total_steps: int, every_step: bool) -> dict[str, Any]:
    """A fresh run trained on the recipe's own train loader, its ``next()`` timed."""
    built = build_in_process(recipe_overrides(arguments, f"trainer.max_steps={total_steps}"), shared.work_dir, shared.data)
    trainer = built.trainer
    timed = TimedIterable(())
    clock = LoopClock(arguments.warmup, every_step=every_step, loader_timer=timed)
    trainer.callbacks.append(clock)
    original_until_stopped = trainer.until_stopped

    # The Trainer reads every batch through until_stopped(loader); wrapping its argument on this
    # instance times next() on the real loader while the loader keeps its own epoch and cursor.
    def until_stopped_timed(batches):
        timed.batches = batches
        return original_until_stopped(timed)

    trainer.until_stopped = until_stopped_timed
    trainer.fit(shared.data.train)
    return {"clock": clock, "loader": timed}


def measure_compile(arguments, shared) -> dict[str, Any]:
    """``trainer.compile`` true against false: steady steps per second, and the compile cost."""
    modes = {"eager": "trainer.compile=false", "compiled": "trainer.compile=true"}
    rounds = alternating_rounds(arguments, shared, arguments.compile_rounds, modes)
    step_s = {name: [clock.step_s() for clock in clocks] for name, clocks in rounds.items()}
    warmup_s = {name: [round(clock.warmup_s(), 3) for clock in clocks] for name, clocks in rounds.items()}
    speedup = statistics.median(eager / compiled for eager, compiled in zip(step_s["eager"], step_s["compiled"]))
    return {
        "rounds": arguments.compile_rounds, "warmup_steps": arguments.warmup, "timed_steps_per_round": arguments.steps,
        "eager_steps_per_s": round(1 / statistics.median(step_s["eager"]), 3),
        "compiled_steps_per_s": round(1 / statistics.median(step_s["compiled"]), 3),
        "median_speedup": round(speedup, 4),
        # The first compiled round compiles; later rounds reuse the compiled code of the process.
        "compile_time_s": round(warmup_s["compiled"][0] - statistics.median(warmup_s["eager"]), 2),
        "warmup_s": warmup_s,
        "dynamo_unique_graphs": dynamo_unique_graphs(),
        # Above 0, compiling went on inside the timed steps (new batch shapes): a longer
        # --warmup gives the steady figure.
        "graphs_compiled_in_timed_steps": [graphs_made_while_timed(clock) for clock in rounds["compiled"]],
    }


def graphs_made_while_timed(clock) -> int | None:
    if clock.graphs_at_warm_end is None or clock.graphs_at_end is None:
        return None
    return clock.graphs_at_end - clock.graphs_at_warm_end


def dynamo_unique_graphs() -> int | None:
    """How many graphs torch.compile made (more than a few: graph breaks or recompiles)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    return counters["stats"].get("unique_graphs")


class SharedData:
    """The recipe's data, built once in this process, and fixed batches cut from it on demand."""

    def __init__(self, arguments, work_dir: Path):
        self.work_dir = work_dir
        resolved = resolved_recipe(recipe_overrides(arguments))
        self.data_parameters = resolved.components["data"].parameters
        self.device = torch.device("cuda") if arguments.device_kind == "gpu" else torch.device("cpu")
        self.data = build_data(resolved, work_dir)
        self._batches: list = []

    def batches(self, count: int) -> list:
        """The next ``count`` batches of the train loader (cut once, then shared by the parts)."""
        if len(self._batches) < count:
            self._batches = fixed_batches(self.data.train, count, self.device)
        return self._batches[:count]


# ---------------------------------------------------------------------------- main


def device_report() -> dict[str, Any]:
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    return {
        "torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": available, "gpu_count": count,
        "gpu_names": [torch.cuda.get_device_name(index) for index in range(count)],
        "bf16_supported": bool(available and torch.cuda.is_bf16_supported()),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
    }


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=PHASES, default=list(PHASES), help="the parts to run (default: all)")
    parser.add_argument("--world-sizes", type=int, nargs="+",
                        help="torchrun process counts, at most the GPU count (default: 1 and every GPU; 1 2 on CPU)")
    parser.add_argument("--ddp-steps", type=int, help="max_steps of each torchrun run (GPU default 200)")
    parser.add_argument("--ddp-timeout-s", type=float, default=300, help="end a torchrun launch after this long")
    parser.add_argument("--log-every", type=int, help="trainer.log_every of the torchrun runs: their timing points (GPU default 5)")
    parser.add_argument("--rounds", type=int, help="bf16 against float32 rounds (GPU default 5)")
    parser.add_argument("--compile-rounds", type=int, help="compiled against eager rounds (GPU default 3)")
    parser.add_argument("--steps", type=int, help="timed steps per round after the warm-up (GPU default 40)")
    parser.add_argument("--warmup", type=int, help="steps left out before timing (GPU default 10)")
    parser.add_argument("--data-steps", type=int, help="timed steps of each data-wait fit (GPU default 150)")
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE", help="more recipe overrides, for every run")
    parser.add_argument("--fsdd-root", help="FSDD's folder (sets CADENCE_FSDD_ROOT for this process and its children)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON object here, after every part")
    parser.add_argument("--allow-cpu", action="store_true", help="without CUDA, run every part on the CPU with tiny step counts")
    arguments = parser.parse_args()
    arguments.device_kind = "gpu" if torch.cuda.is_available() else "cpu"
    for name, value in DEFAULTS[arguments.device_kind].items():
        if getattr(arguments, name) is None:
            setattr(arguments, name, value)
    for name in ("ddp_steps", "log_every", "rounds", "compile_rounds", "steps", "warmup", "data_steps"):
        if getattr(arguments, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")  # the clocks start after step `warmup`
    if arguments.world_sizes is None:
        count = torch.cuda.device_count() if arguments.device_kind == "gpu" else 2
        arguments.world_sizes = sorted({1, count})
    return arguments


def settings_report(arguments) -> dict[str, Any]:
    names = ("world_sizes", "ddp_steps", "log_every", "rounds", "compile_rounds", "steps", "warmup", "data_steps", "only")
    return {**{name: getattr(arguments, name) for name in names}, "overrides": recipe_overrides(arguments)}


def emit(report: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=2) + "\n")


def run_part(report: dict[str, Any], name: str, measure: Callable[[], dict[str, Any]], path: Path | None) -> None:
    """One part, timed; an error becomes the part's report, so the other parts still run."""
    started = time.perf_counter()
    print(f"gpu.py: {name} ...", file=sys.stderr, flush=True)
    try:
        report[name] = measure()
    except Exception as error:  # noqa: BLE001 - one failed part must not lose the others' figures
        report[name] = {"error": f"{type(error).__name__}: {error}", "traceback_tail": traceback.format_exc()[-2000:]}
    report[name]["part_wall_s"] = round(time.perf_counter() - started, 1)
    print(f"gpu.py: {name} done in {report[name]['part_wall_s']} s", file=sys.stderr, flush=True)
    emit(report, path)


def run_in_process_parts(report: dict[str, Any], arguments, names: list[str], work_dir: Path) -> None:
    """bf16, data wait and compile, in this process, over the recipe's data built once."""
    fields = {"bf16": "bf16", "data": "data_wait", "compile": "compile"}
    try:
        shared = SharedData(arguments, work_dir)
    except Exception as error:  # noqa: BLE001 - the parts already measured are still reported
        for name in names:
            report[fields[name]] = {"error": f"building the recipe's data: {type(error).__name__}: {error}"}
        emit(report, arguments.json_out)
        return
    measures = {"bf16": measure_bf16, "data": measure_data_wait, "compile": measure_compile}
    for name in names:  # compile last: it leaves compiled code behind in this process
        run_part(report, fields[name], lambda measure=measures[name]: measure(arguments, shared), arguments.json_out)


def main() -> None:
    arguments = parse_arguments()
    if arguments.device_kind == "cpu" and not arguments.allow_cpu:
        print("gpu.py: no CUDA device is available; run it on a machine with NVIDIA GPUs (or pass --allow-cpu for a smoke test)",
              file=sys.stderr)
        sys.exit(2)
    if arguments.fsdd_root:
        os.environ["CADENCE_FSDD_ROOT"] = str(Path(arguments.fsdd_root).resolve())
    started = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "gpu", "recipe": str(RECIPE.relative_to(REPOSITORY)), "device_kind": arguments.device_kind,
                              "device": device_report(), "settings": settings_report(arguments)}
    if arguments.device_kind == "cpu":
        report["note"] = "CPU smoke test: a cut-down recipe and a few steps check the code paths; the figures mean nothing"
    report["corpus_prepare_s"] = round(prepare_corpus(arguments), 2)
    with tempfile.TemporaryDirectory(prefix="cadence-gpu-benchmark-") as scratch:
        scratch = Path(scratch)
        if "ddp" in arguments.only:
            run_part(report, "ddp", lambda: measure_ddp(arguments, scratch), arguments.json_out)
        in_process = [name for name in ("bf16", "data", "compile") if name in arguments.only]
        if in_process:
            run_in_process_parts(report, arguments, in_process, scratch / "in-process")
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    emit(report, arguments.json_out)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
