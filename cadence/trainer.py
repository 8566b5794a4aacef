"""The Trainer: trains, validates and tests any Task on any DataLoader.

The whole loop is :meth:`Trainer.fit`, readable top to bottom; every callback hook is
called from this file (the map is in :mod:`cadence.callbacks.base`). To change one piece
without a callback, subclass and override a documented method: ``training_step``,
``clip_gradients``, ``optimizer_step``, ``evaluate_batch`` or ``save_checkpoint``.

Example with a plain model and DataLoaders, no config::

    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> from cadence import ClassificationTask, Trainer
    >>> from cadence.metrics import Accuracy
    >>> data = TensorDataset(torch.randn(64, 4), torch.randint(0, 3, (64,)))
    >>> task = ClassificationTask(torch.nn.Linear(4, 3))
    >>> trainer = Trainer(task, torch.optim.SGD(task.parameters(), lr=0.1), max_epochs=2,
    ...                   metrics=[Accuracy(num_classes=3)], monitor="val/accuracy", mode="max")
    >>> results = trainer.fit(DataLoader(data, batch_size=16), val_data=DataLoader(data, batch_size=32))
    >>> sorted(results["best_validation"])[:2]
    ['val/accuracy', 'val/loss']
"""

from __future__ import annotations

import copy
import math
import signal
import time
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import torch
from torch import nn

from cadence.callbacks.base import Callback
from cadence.checkpoint.checkpointer import Checkpointer
from cadence.checkpoint.format import load_checkpoint
from cadence.checkpoint.retention import CheckpointPolicy, checkpoints_to_delete
from cadence.runtime.signals import StopRequests
from cadence.errors import TrainingInterrupted
from cadence.checkpoint.checkpointer import find_checkpoint, listing
from cadence.config.schema import config_hash
from cadence.runtime.device import move_to_device, resolve_device
from cadence.epoch_batches import is_last_batch, length, remaining_batches, until_stopped
from cadence.errors import ConfigError
from cadence.evaluation import evaluate
from cadence.experiment import Experiment
from cadence.runtime.logs import get_logger, progress
from cadence.metrics import Metric
from cadence.optim import is_plateau_scheduler
from cadence.reporting import format_metrics, learning_rate_logs, results_of
from cadence.checkpoint.snapshot import capture, restore
from cadence.state import TrainState
from cadence.tasks.base import StepOutput, check_task


class Trainer:
    """Runs training, validation and testing for a :class:`~cadence.tasks.base.Task`.

    Args:
        task: an ``nn.Module`` with ``training_step`` and ``validation_step``.
        optimizer: any ``torch.optim.Optimizer`` over the task's parameters.
        scheduler: an LR scheduler, stepped per ``scheduler_interval`` ("epoch" or "step");
            ``ReduceLROnPlateau`` is stepped after validation with ``scheduler_monitor``.
        metrics: metrics computed on every validation and test (prefixed ``val/``, ``test/``);
            copies of them also run on training batches every ``train_metrics_every`` steps.
        monitor, mode: the validation value that defines the best model ("val/loss", "min").
        restore_best: at the end of fit, load the best weights back before testing.
        experiment: where logs, metrics, TensorBoard curves and checkpoints go (optional).
        checkpoint_policy: when checkpoints are saved and which are kept (with an experiment).
    """

    def __init__(
        self,
        task: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        scheduler: Any = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        scheduler_monitor: str | None = None,
        max_epochs: int = 10,
        max_steps: int | None = None,
        device: str | torch.device = "auto",
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
        metrics: Sequence[Metric] = (),
        train_metrics_every: int = 0,
        monitor: str = "val/loss",
        mode: Literal["min", "max"] = "min",
        restore_best: bool = True,
        callbacks: Iterable[Callback] = (),
        experiment: Experiment | None = None,
        log_every: int = 50,
        progress_bar: bool = True,
        checkpoint_policy: CheckpointPolicy = CheckpointPolicy(),
        config: dict[str, Any] | None = None,
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        self.task = check_task(task)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.scheduler_monitor = scheduler_monitor or monitor
        self.max_epochs = max_epochs
        self.max_steps = max_steps
        self.device = resolve_device(device)
        self.clip_grad_norm = clip_grad_norm
        self.clip_grad_value = clip_grad_value
        self.metrics = list(metrics)
        self.train_metrics = [copy.deepcopy(metric) for metric in self.metrics] if train_metrics_every else []
        self.train_metrics_every = train_metrics_every
        self.monitor = monitor
        self.mode = mode
        self.restore_best = restore_best
        self.callbacks = list(callbacks)
        self.experiment = experiment
        self.log_every = log_every
        self.progress_bar = progress_bar
        self.config = config
        self.state = TrainState()
        self.logger = get_logger()
        self.checkpointer = Checkpointer(experiment.checkpoints_directory) if experiment else None
        self.checkpoint_policy = checkpoint_policy
        self._best_weights: dict[str, torch.Tensor] | None = None  # kept in memory when there is no folder
        self.test_reports: dict[str, Any] = {}
        self.train_data: Iterable | None = None
        self.data: Any = None  # a DataBundle, when rebuilt by from_checkpoint
        self.pending_resume: Path | None = None  # set by from_checkpoint; used by the next fit
        self.resumed_from: Path | None = None
        self.stop_requests = StopRequests()
        # The running epoch's sums, on the device (no sync per step); saved in checkpoints so a
        # resumed epoch reports the same mean loss.
        self.epoch_sums = {"loss": torch.zeros(()), "window_loss": torch.zeros(()), "batches": torch.zeros((), dtype=torch.int64)}
        self._improved_this_epoch = False
        self._save_at_epoch_end = False  # a step checkpoint fell due on the epoch's last batch
        self.last_monitored: float | None = None  # the monitored value of this epoch's validation
        self.epoch_start_rng: torch.Tensor | None = None  # replayed to resume a plain DataLoader mid-epoch
        self._last_save = (time.monotonic(), None)  # (when, the (epoch, step, batch) position saved)

    # ------------------------------------------------------------------ the loop
    def fit(
        self, train_data: Iterable | None = None, val_data: Iterable | None = None, test_data: Iterable | None = None,
        resume_from: str | Path | None = None,
    ) -> dict[str, Any]:
        """Train until ``max_epochs``/``max_steps`` or ``state.should_stop``; return the results.

        ``resume_from``: a checkpoint folder, or an experiment folder (its newest valid
        checkpoint): every state is restored and training continues exactly where it was.
        After :meth:`from_checkpoint`, ``fit()`` takes the rebuilt data and resumes.
        """
        if train_data is None:
            if self.data is None:
                raise ValueError("fit() needs train_data (only a Trainer made by from_checkpoint has its own data)")
            train_data, val_data, test_data = self.data.train, self.data.valid, self.data.test
        resume_from, self.pending_resume = resume_from or self.pending_resume, None
        state = self.state
        started = time.perf_counter()
        self.train_data = train_data
        self.task.to(self.device)
        self.epoch_sums = {name: value.to(self.device) for name, value in self.epoch_sums.items()}
        self.stop_requests.reset()
        if self.experiment is not None:
            self.experiment.stop_requested = False
        if self.checkpointer is not None:
            self.checkpointer.clean_temporary()  # folders of a save killed half-way
        if resume_from is not None:
            self.resume(resume_from)
        self.call_hook("on_fit_start")
        if self.experiment is not None:
            self.experiment.training = True  # Experiment.stop() now asks for a clean stop
        try:
            with self.stop_requests.watching():
                while self.should_continue():
                    self.call_hook("on_epoch_start")  # also when resuming inside this epoch
                    if callable(getattr(train_data, "set_epoch", None)):
                        train_data.set_epoch(state.epoch)  # the epoch's batch plan (shuffling) follows the state
                    epoch_started = time.perf_counter()
                    if not self.train_epoch(train_data):
                        break  # stopped inside the epoch: no validation of a partial epoch
                    # .item() waits for the device: once per epoch.
                    train_loss = self.epoch_sums["loss"].item() / max(int(self.epoch_sums["batches"]), 1)
                    epoch_logs = {"train/loss": train_loss, **self.named_loss_means(), "train/epoch_time_s": time.perf_counter() - epoch_started}
                    self._improved_this_epoch = False
                    if val_data is not None:
                        metrics = self.validate(val_data)
                        self.track_best(metrics)
                        self.last_monitored = self.metric_value(metrics, self.monitor)
                        self.call_hook("on_validation_end", metrics)
                        epoch_logs.update(metrics)
                        self.maybe_step_scheduler_on_validation(metrics)
                    if self.scheduler is not None and self.scheduler_interval == "epoch" and not is_plateau_scheduler(self.scheduler):
                        self.scheduler.step()
                    self.log_epoch(epoch_logs)
                    state.epoch += 1
                    state.batch_in_epoch = 0
                    self.call_hook("on_epoch_end")
                    if self.checkpoint_policy.is_due_after_epoch(state.epoch) or self._improved_this_epoch or self._save_at_epoch_end:
                        self.save_checkpoint(monitor_value=self.last_monitored)
                final = self.maybe_save_final_checkpoint()
                self.call_hook("on_fit_end")
        except BaseException as error:
            self.call_hook("on_exception", error)
            raise
        finally:
            if self.experiment is not None:
                self.experiment.training = False
        self.maybe_raise_interrupted(final)
        self.maybe_restore_best()
        test_metrics = self.test(test_data) if test_data is not None else {}
        return self.results(test_metrics, wall_time=time.perf_counter() - started)

    def named_loss_means(self) -> dict[str, float]:
        batches = max(int(self.epoch_sums["batches"]), 1)
        return {f"train/{name}": value.item() / batches for name, value in self.epoch_sums.items() if name.startswith("loss_")}

    def should_continue(self) -> bool:
        """Another epoch? Not past max_epochs or max_steps, not stopped by a callback or a request."""
        state = self.state
        return state.epoch < self.max_epochs and not state.should_stop and not self.reached_max_steps() and not self.stop_requested()

    def reached_max_steps(self) -> bool:
        return self.max_steps is not None and self.state.global_step >= self.max_steps

    def stop_requested(self) -> bool:
        """A signal or ``Experiment.stop()`` asked for a clean stop (unlike ``should_stop``, not saved)."""
        return self.stop_requests.requested or (self.experiment is not None and self.experiment.stop_requested)

    def train_epoch(self, train_data: Iterable) -> bool:
        """Train on the epoch's batches from ``state.batch_in_epoch`` on; False if stopped inside it.

        A stop that comes on the epoch's last batch lets the epoch finish (validation, epoch-end
        checkpoint), exactly as a run that goes on would.
        """
        state = self.state
        self.task.train()
        sums = self.epoch_sums
        if state.batch_in_epoch == 0:
            for value in sums.values():
                value.zero_()
            self.last_monitored = None
        batches = remaining_batches(self, train_data)
        description = f"epoch {state.epoch + 1}/{self.max_epochs}"
        for batch in until_stopped(self, progress(batches, self.progress_bar, description, total=length(train_data))):
            batch = move_to_device(batch, self.device)
            self.call_hook("on_batch_start", batch)
            output = self.training_step(batch)
            output.loss.backward()
            self.call_hook("on_after_backward")
            self.clip_gradients()
            self.optimizer_step()
            state.global_step += 1
            state.batch_in_epoch += 1
            loss = output.loss.detach()
            sums["loss"] += loss
            sums["window_loss"] += loss
            sums["batches"] += 1
            for name, value in output.losses.items():
                # Named parts (e.g. ctc and attention) get epoch means of their own: train/loss_<name>.
                part = f"loss_{name}"
                sums[part] = sums.get(part, torch.zeros((), device=self.device)) + value.detach()
            self.maybe_update_train_metrics(output)
            if state.global_step % self.log_every == 0:
                # .item() waits for the device: done once per log_every steps, not per step.
                self.log({"train/loss": sums["window_loss"].item() / self.log_every, **self.learning_rate_logs()}, "train")
                sums["window_loss"].zero_()
            self.call_hook("on_batch_end", output)
            last_batch = is_last_batch(self, train_data)
            if (state.should_stop or self.reached_max_steps() or self.stop_requested()) and not last_batch:
                return False
            if self.checkpointer is not None and self.checkpoint_policy.is_due_after_step(
                state.global_step, time.monotonic() - self._last_save[0]
            ):
                # On the last batch the epoch-end save (after validation) takes its place.
                self._save_at_epoch_end = last_batch
                if not last_batch:
                    self.save_checkpoint()
        # The loop also ends when loading failed after a stop request (see until_stopped).
        return not (self.stop_requested() and not is_last_batch(self, train_data))

    # ------------------------------------------------------------------ overridable steps
    def training_step(self, batch: Any) -> StepOutput:
        return self.task.training_step(batch)

    def clip_gradients(self) -> None:
        """Clip by value, then by global norm, as configured (on every batch)."""
        if self.clip_grad_value is None and self.clip_grad_norm is None:
            return
        parameters = [parameter for parameter in self.task.parameters() if parameter.grad is not None]
        if self.clip_grad_value is not None:
            torch.nn.utils.clip_grad_value_(parameters, self.clip_grad_value)
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, self.clip_grad_norm)

    def optimizer_step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None and self.scheduler_interval == "step" and not is_plateau_scheduler(self.scheduler):
            self.scheduler.step()

    def evaluate_batch(self, batch: Any) -> StepOutput:
        return self.task.validation_step(batch)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, data: Iterable, split: str, records: list[dict[str, Any]] | None = None) -> dict[str, float]:
        """Loss, named losses and every metric over ``data``, keyed ``"<split>/<name>"``
        (see :func:`cadence.evaluation.evaluate`, which also keeps the task's records)."""
        return evaluate(self, data, split, records)

    def validate(self, data: Iterable) -> dict[str, float]:
        return self.evaluate(data, "val")

    def test(self, data: Iterable) -> dict[str, float]:
        metrics = self.evaluate(data, "test")
        # Non-scalar results (a confusion matrix) go to results.json, not to the curves.
        self.test_reports = {
            type(metric).__name__: {"classes": metric.class_names, "matrix": metric.matrix()}
            for metric in self.metrics if callable(getattr(metric, "matrix", None))
        }
        self.log(metrics, "test")
        self.logger.info("test: %s", format_metrics(metrics))
        return metrics

    def maybe_update_train_metrics(self, output: StepOutput) -> None:
        if not self.train_metrics or output.predictions is None:
            return
        for metric in self.train_metrics:
            metric.update(output.predictions, output.targets)
        if self.state.global_step % self.train_metrics_every == 0:
            values = {}
            for metric in self.train_metrics:
                values.update({f"train/{name}": value for name, value in metric.compute().items()})
                metric.reset()
            self.log(values, "train")

    # ------------------------------------------------------------------ best model
    def metric_value(self, metrics: dict[str, float], name: str) -> float:
        if name not in metrics:
            raise ConfigError(f"monitor '{name}' is not among the validation results; choose one of: {', '.join(sorted(metrics))}")
        return float(metrics[name])

    def is_better(self, value: float, best: float | None) -> bool:
        if math.isnan(value):
            return False
        return best is None or (value > best if self.mode == "max" else value < best)

    def track_best(self, metrics: dict[str, float]) -> None:
        """Record this validation in the history and remember the weights if they are the best."""
        state = self.state
        value = self.metric_value(metrics, self.monitor)
        epoch_number = state.epoch + 1  # 1-based, as printed in the logs
        state.history.append({"epoch": epoch_number, "step": state.global_step, **metrics})
        if not self.is_better(value, state.best_value):
            return
        state.best_value, state.best_epoch = value, epoch_number
        self._improved_this_epoch = True
        if self.checkpointer is not None:
            state.best_checkpoint = self.checkpoint_name()  # written at the end of this epoch
        elif self.restore_best:
            self._best_weights = {key: tensor.detach().to("cpu", copy=True) for key, tensor in self.task.state_dict().items()}

    def maybe_restore_best(self) -> None:
        if not self.restore_best or self.state.best_epoch is None:
            return
        folder = self.checkpointer.directory if self.checkpointer is not None else None
        if folder is None and self.resumed_from is not None:
            folder = self.resumed_from.parent  # resumed without an experiment: the run's own checkpoints
        if folder is not None and self.state.best_checkpoint is not None:
            if not (folder / self.state.best_checkpoint).is_dir():
                self.logger.warning("the best checkpoint %s is gone; keeping the last weights", folder / self.state.best_checkpoint)
                return
            state, _ = load_checkpoint(folder / self.state.best_checkpoint)
            self.task.load_state_dict(state["task"])
        elif self._best_weights is not None:
            self.task.load_state_dict(self._best_weights)
        else:
            return
        self.logger.info("restored the best model: epoch %d, %s = %.6g", self.state.best_epoch, self.monitor, self.state.best_value)

    def maybe_step_scheduler_on_validation(self, metrics: dict[str, float]) -> None:
        if self.scheduler is not None and is_plateau_scheduler(self.scheduler):
            self.scheduler.step(self.metric_value(metrics, self.scheduler_monitor))

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, experiment: Experiment | None = None) -> Trainer:
        """Rebuild data, task, optimizer, schedule, callbacks and Trainer from a checkpoint's
        config; the next ``fit()`` restores every state and continues (see :mod:`cadence.serialization`)."""
        from cadence.config.rebuild import trainer_from_checkpoint

        return trainer_from_checkpoint(checkpoint, experiment)

    def checkpoint_name(self) -> str:
        return f"step-{self.state.global_step:09d}"

    def _position(self) -> tuple[int, int, int]:
        return (self.state.epoch, self.state.global_step, self.state.batch_in_epoch)

    def stateful(self) -> dict[str, Any]:
        """Everything a checkpoint holds, as plain state (see :func:`cadence.snapshot.capture`)."""
        return capture(self)

    def load_stateful(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`stateful` captured (see :func:`cadence.snapshot.restore`)."""
        restore(self, state)

    def resume(self, checkpoint: str | Path) -> Path:
        """Load a checkpoint (or an experiment folder's newest valid one) into every component.

        Called by ``fit(..., resume_from=...)``, once the training data is known (its position
        is part of the state). ``state.should_stop`` is kept: a run a callback stopped stays
        stopped. Checkpoints newer than the one resumed from belong to an abandoned run and
        are set aside in ``checkpoints/.abandoned/``.
        """
        if self.train_data is None:
            raise ValueError("resume through fit(train_data, ..., resume_from=...): the loader's position is restored too")
        path = find_checkpoint(checkpoint)
        state, metadata = load_checkpoint(path)
        self.load_stateful(state)
        self.resumed_from = path
        if self.checkpointer is not None and path.parent.resolve() == self.checkpointer.directory.resolve():
            self.checkpointer.set_aside_newer_than(path)
        if self.experiment is not None and path.resolve().is_relative_to(self.experiment.directory):
            # Lines and curves written after this checkpoint belong to the run that died.
            self.experiment.rewind(metadata.get("metrics_lines"), self.state.global_step)
        self._last_save = (time.monotonic(), self._position())
        self.logger.info("resumed from %s: epoch %d, step %d, batch %d of the epoch", path, self.state.epoch + 1,
                         self.state.global_step, self.state.batch_in_epoch)
        return path

    def save_checkpoint(self, monitor_value: float | None = None) -> Path | None:
        """Write a checkpoint of this moment, then apply retention."""
        if self.checkpointer is None:
            return None
        name = self.checkpoint_name()
        metadata = {
            "epoch": self.state.epoch, "global_step": self.state.global_step, "batch_in_epoch": self.state.batch_in_epoch,
            "monitor": self.monitor, "mode": self.mode, "monitor_value": monitor_value, "best_value": self.state.best_value,
            "metrics_lines": self.experiment.metrics_lines if self.experiment is not None else None,
            "config_sha256": config_hash(self.config) if self.config is not None else None,
        }
        path = self.checkpointer.save(name, self.stateful(), metadata)
        self._last_save = (time.monotonic(), self._position())
        self._save_at_epoch_end = False
        protected = {name} | ({self.state.best_checkpoint} if self.state.best_checkpoint else set())
        for stale in checkpoints_to_delete(listing(self.checkpointer), self.checkpoint_policy, self.mode, protected):
            self.checkpointer.delete(stale)
        return path

    def maybe_save_final_checkpoint(self) -> Path | None:
        """The state at the end of fit, unless the last save was of this very position."""
        if self.checkpointer is None:
            return None
        if self._last_save[1] == self._position():
            return self.checkpointer.directory / self.checkpoint_name()
        return self.save_checkpoint(monitor_value=self.last_monitored if self.state.batch_in_epoch == 0 else None)

    def maybe_raise_interrupted(self, checkpoint: Path | None) -> None:
        """After a stop request (a signal, ``Experiment.stop()``): say where to resume, skip the test."""
        signal_number = self.stop_requests.signal_number
        if not self.stop_requested():
            return
        cause = signal.Signals(signal_number).name if signal_number is not None else "Experiment.stop()"
        where = f"; checkpoint {checkpoint}; continue with `cadence resume {self.experiment.directory}`" if checkpoint else ""
        raise TrainingInterrupted(f"training stopped by {cause} at step {self.state.global_step}{where}", signal_number, checkpoint)

    # ------------------------------------------------------------------ logging and results
    def call_hook(self, hook: str, *arguments: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *arguments)

    def learning_rate_logs(self) -> dict[str, float]:
        return learning_rate_logs(self.optimizer)

    def log(self, values: dict[str, float], split: str) -> None:
        if self.experiment is not None:
            self.experiment.log_metrics(values, step=self.state.global_step, epoch=self.state.epoch, split=split)

    def log_epoch(self, values: dict[str, float]) -> None:
        values = {**values, **self.learning_rate_logs()}
        self.log(values, "epoch")
        shown = {name: value for name, value in values.items() if not name.startswith("train/lr")}
        self.logger.info("epoch %d/%d  %s", self.state.epoch + 1, self.max_epochs, format_metrics(shown))

    def results(self, test_metrics: dict[str, float], wall_time: float) -> dict[str, Any]:
        return results_of(self, test_metrics, wall_time)
