"""The Trainer: trains, validates and tests any Task on any DataLoader.

The whole loop is :meth:`Trainer.fit`, readable top to bottom; every callback hook is
called from this file (the map is in :mod:`cadence.callbacks.base`). Each control has one
decision point: :meth:`Trainer.should_stop` (whether to stop), :meth:`Trainer.maybe_save`
(whether to save, by :class:`~cadence.checkpoint.retention.SaveTriggers`), and the train
loader's state (the position in the epoch, :mod:`cadence.resumable`). To change one piece
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

import contextlib
import copy
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import torch
from torch import nn

from cadence.bounds import MonitorKeys, MonitorModes, NonNegativeInt, PositiveFloat, PositiveInt
from cadence.callbacks.base import Callback
from cadence.callbacks.early_stopping import EarlyStopping
from cadence.checkpoint.candidates import use_first_that_fits
from cadence.checkpoint.checkpointer import Checkpointer, checkpoint_name, find_checkpoint, listing
from cadence.checkpoint.format import load_checkpoint
from cadence.checkpoint.retention import Boundary, CheckpointPolicy, SaveTriggers, checkpoints_to_delete, improves, ranked_monitors
from cadence.checkpoint.snapshot import capture, load_module_state, restore
from cadence.errors import CheckpointError, ConfigError, NonFiniteLoss, TrainingInterrupted
from cadence.evaluation import evaluate, save_hypotheses
from cadence.experiment import Experiment
from cadence.metrics import Metric
from cadence.optim.control import LearningRateSchedule, as_driver
from cadence.optim.per_module import ScheduleSet
from cadence.optim.scheduled_values import ScheduledSettings, ScheduledValue
from cadence.registry import suggest
from cadence.reporting import EpochSums, format_metrics, learning_rate_logs, results_summary
from cadence.resumable import PositionedIterable, ResumableLoader, batches_left, resumable_loader
from cadence.runtime.device import move_to_device, resolve_device
from cadence.runtime.distributed import (
    agree, all_gather_objects, broadcast_object, broadcast_tensors, distributed_rank_and_size, reduce_sum,
)
from cadence.runtime.files import config_hash
from cadence.runtime.logs import get_logger, progress
from cadence.run_record import maybe_record_run, maybe_write_results
from cadence.runtime.signals import StopRequests
from cadence.state import TrainState
from cadence.parallel import FullModelState, FullOptimizerState, ProcessGroupWrapper, full, local
from cadence.tasks.base import StepOutput, check_task


class Trainer:
    """Runs training, validation and testing for a :class:`~cadence.tasks.base.Task`.

    Args:
        task: an ``nn.Module`` with ``training_step`` and ``validation_step``.
        optimizer: any ``torch.optim.Optimizer`` over the task's parameters.
        scheduler: an LR scheduler, stepped per ``scheduler_interval`` ("epoch" or "step");
            ``ReduceLROnPlateau`` is stepped after validation with ``scheduler_monitor``.
        metrics: metrics computed on every validation and test (prefixed ``val/``, ``test/``);
            copies of them also run on training batches, logged every ``train_metrics_every``
            updates (a text task's hypotheses decoded only for those updates: ``StepOutput.decode``).
        monitor, mode: the validation value that defines the best model ("val/loss", "min");
            a list (``["val/wer", "val/loss"]``) adds tie-breakers, for validations equal on the first.
        validate_every_steps: also validate every N updates inside an epoch (the epoch's own
            validation stays; an epoch's last update is validated once, as the epoch's). These
            validations count for the best model (saved as a checkpoint at their step) and for
            early stopping (``on_validation_end``); schedules that decide by the validation score
            (Newbob, reduce-on-plateau) read the epoch's validation only.
        restore_best: at the end of fit, load the best weights back before testing.
        experiment: where logs, metrics, TensorBoard curves and checkpoints go (optional).
        checkpoint_policy: when checkpoints are saved and which are kept (with an experiment).
        accumulate_batches: batches whose gradients make one update (one optimizer and
            schedule step), weighted by batch size: the update of one batch as large as all of them.
        on_nonfinite: what a NaN or infinite training loss or gradient norm does. "error" (the
            default) stops the run with one line, having saved nothing after the last finite step
            (checked where the loop waits for the device anyway); "skip" checks every step (a wait
            for the device each), drops that update, logs it with the batch's utterance ids and
            goes on, stopping with the same error after ``nonfinite_patience`` consecutive skips.

    precision: 32 (float32), or mixed precision: "bf16" or "fp16" autocast around the forward
        passes (features and the CTC loss stay in float32); "fp16" scales the loss with a
        ``GradScaler`` (saved in checkpoints), which skips the updates whose gradients overflow
        and lowers its scale (those are not counted as non-finite skips).
    compile: run the task's ``model`` (else the task) through ``torch.compile``, in place:
        checkpoints keep the model's own parameter names and load without compiling.

    parallel: how several processes share the work (see :mod:`cadence.parallel`): "ddp" (each
        holds the whole model) or "fsdp" (FSDP2: parameters, gradients and optimizer state
        sharded, for a model that does not fit one device).

    Several processes (``torchrun``, or any initialised ``torch.distributed`` process group):
    ``fit`` wraps the task (``parallel``); each process trains its share of the
    batches, the update is that of the mean over every process's examples (see
    ``StepOutput.weight``), and stops, saves and skips are agreed by all processes at once.
    Only the process with an ``experiment`` (rank 0) writes; the others take part in each save,
    which gathers their random generators and loss sums into the checkpoint.
    """

    def __init__(
        self,
        task: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        scheduler: Any = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        scheduler_monitor: str | None = None,
        max_epochs: PositiveInt = 10,
        max_steps: PositiveInt | None = None,
        device: str | torch.device = "auto",
        clip_grad_norm: PositiveFloat | None = None,
        clip_grad_value: PositiveFloat | None = None,
        metrics: Sequence[Metric] = (),
        monitor: MonitorKeys = "val/loss",
        mode: MonitorModes = "min",
        restore_best: bool = True,
        validate_every_steps: PositiveInt | None = None,
        train_metrics_every: NonNegativeInt = 0,
        callbacks: Iterable[Callback] = (),
        experiment: Experiment | None = None,
        log_every: PositiveInt = 50,
        progress_bar: bool = True,
        accumulate_batches: PositiveInt = 1,
        on_nonfinite: Literal["error", "skip"] = "error",
        nonfinite_patience: PositiveInt = 10,
        precision: Literal[32, "bf16", "fp16"] = 32,
        compile: bool = False,
        parallel: Literal["ddp", "fsdp"] = "ddp",
        schedules: dict[str, ScheduledValue] | None = None,
        stages: Any = None,
        checkpoint_policy: CheckpointPolicy = CheckpointPolicy(),
        config: dict[str, Any] | None = None,
    ):
        # The monitored value, then its tie-breakers: [("val/wer", "min"), ("val/loss", "min")].
        self.monitors = ranked_monitors(monitor, mode)
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        self.task = check_task(task)
        self.optimizer = optimizer
        self._scheduler_interval = scheduler_interval
        self.scheduler = scheduler  # as given: its state is the checkpoint's "scheduler"
        self.scheduler_monitor = scheduler_monitor or self.monitors[0][0]
        self.max_epochs = max_epochs
        self.max_steps = max_steps
        self.requested_device = device  # as given ("auto"), which a run's config records
        self.device = resolve_device(device)
        self.clip_grad_norm = clip_grad_norm
        self.clip_grad_value = clip_grad_value
        self.metrics = list(metrics)
        if self.metrics and getattr(self.task, "gives_predictions", True) is False:
            names = ", ".join(type(metric).__name__ for metric in self.metrics)
            raise ConfigError(f"metrics: {type(self.task).__name__} gives no predictions to score ({names}); "
                              "list none (metrics: [])")
        self.train_metrics = [copy.deepcopy(metric) for metric in self.metrics] if train_metrics_every else []
        self.train_metrics_every = train_metrics_every
        self._warned_unscored = False  # a task without training predictions is named once
        self.monitor, self.mode = self.monitors[0]  # the value the best model, schedules and stopping follow
        self.monitor_setting, self.mode_setting = monitor, mode  # as given (the run's config records them)
        self.restore_best = restore_best
        self.validate_every_steps = validate_every_steps
        self.callbacks = list(callbacks)
        self.experiment = experiment
        self.log_every = log_every
        self.progress_bar = progress_bar
        if on_nonfinite not in ("error", "skip"):
            raise ValueError(f"on_nonfinite must be 'error' or 'skip', got {on_nonfinite!r}")
        self.accumulate_batches = accumulate_batches
        precision = int(precision) if precision in ("32", 32) else precision  # "32" from Python is 32
        if precision not in (32, "bf16", "fp16"):
            raise ValueError(f"precision must be 32, 'bf16' or 'fp16', got {precision!r}")
        self.precision = precision
        self.autocast_dtype = {32: None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.grad_scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self.compile = compile
        self._compiled = False
        if parallel not in ("ddp", "fsdp"):
            raise ValueError(f"parallel must be 'ddp' or 'fsdp', got {parallel!r}")
        if parallel == "fsdp" and precision == "fp16":
            raise ValueError("parallel='fsdp' takes precision 32 or 'bf16' (fp16's GradScaler is not sharded here)")
        self.parallel = parallel
        self.scheduled = ScheduledSettings(schedules)  # values by epoch or step: dropout, clipping, curriculum, ...
        self.stages = stages  # a recipe's stages (cadence.config.stages.StagePlan): other tasks from some epoch on
        self.on_nonfinite = on_nonfinite
        self.nonfinite_patience = nonfinite_patience
        self.config = config
        self.state = TrainState()
        self.logger = get_logger()
        self.checkpointer = Checkpointer(experiment.checkpoints_directory) if experiment else None
        self.save_triggers = SaveTriggers(checkpoint_policy)  # decides when to save; maybe_save performs
        self.stop_requests = StopRequests()  # signals and Experiment.stop(); should_stop() reads them
        self.epoch_sums = EpochSums()
        self.train_loader: ResumableLoader | None = None  # owns the position in the epoch
        self.val_data: Iterable | None = None  # fit's validation data (a stage function may read it)
        self._best_weights: dict[str, torch.Tensor] | None = None  # kept in memory when there is no folder
        self._best_stage: dict[str, Any] | None = None  # and the stage they belong to
        self.test_reports: dict[str, Any] = {}
        self.data: Any = None  # a DataBundle, when rebuilt by cadence.trainer_from_checkpoint
        self.pending_resume: Path | None = None  # set by trainer_from_checkpoint; used by the next fit
        self.resumed_from: Path | None = None
        self.window = UpdateWindow()  # the batches whose gradients the next update takes
        self.evaluated_batches: int | None = None  # batches of the last evaluation (None: a subclass's own)
        self.rank, self.world_size = 0, 1  # this process among those training together (set by fit)
        self.wrapped: ProcessGroupWrapper | None = None  # the task wrapped for several processes
        self.saves_checkpoints = self.checkpointer is not None  # on every rank: whether rank 0 saves
        self._stop_agreed = False  # with several processes, the stop requests as last agreed by all
        self._loss_finite_until = 0  # the step up to which every training loss was finite
        self.nonfinite_watch = NonFiniteWatch()  # which step's loss first went NaN, and its utterances
        self.check_monitored_keys()

    @property
    def scheduler(self) -> Any:
        """The learning-rate schedule as given (a LearningRateSchedule or a PyTorch scheduler);
        the loop drives it through ``self.schedule`` (:class:`~cadence.optim.control.ScheduleDriver`)."""
        return self._scheduler

    @scheduler.setter
    def scheduler(self, scheduler: Any) -> None:
        self._scheduler = scheduler
        self.schedule = as_driver(scheduler, self._scheduler_interval)

    @property
    def scheduler_interval(self) -> Literal["epoch", "step"]:
        """When a PyTorch scheduler steps: after each epoch, or after each update."""
        return self._scheduler_interval

    @scheduler_interval.setter
    def scheduler_interval(self, interval: Literal["epoch", "step"]) -> None:
        self._scheduler_interval = interval
        self.schedule = as_driver(self._scheduler, interval)

    @property
    def checkpoint_policy(self) -> CheckpointPolicy:
        """When checkpoints are saved and which are kept (held by the save triggers, which decide)."""
        return self.save_triggers.policy

    @checkpoint_policy.setter
    def checkpoint_policy(self, policy: CheckpointPolicy) -> None:
        self.save_triggers.policy = policy

    # ------------------------------------------------------------------ the loop
    def fit(
        self, train_data: Iterable | None = None, val_data: Iterable | None = None, test_data: Iterable | None = None,
        resume_from: str | Path | None = None,
    ) -> dict[str, Any]:
        """Train until ``max_epochs``/``max_steps`` or a stop (see :meth:`should_stop`); return the results.

        ``resume_from``: a checkpoint folder, or an experiment folder (its newest valid
        checkpoint): every state is restored and training continues exactly where it was.
        After :func:`cadence.trainer_from_checkpoint`, ``fit()`` takes the rebuilt data and resumes.
        """
        if train_data is None:
            if self.data is None:
                raise ValueError("fit() needs train_data (only a Trainer made by trainer_from_checkpoint has its own data)")
            train_data, val_data, test_data = self.data.train, self.data.valid, self.data.test
        resume_from, self.pending_resume = resume_from or self.pending_resume, None
        state = self.state
        started = time.perf_counter()
        self.train_loader = resumable_loader(train_data, self.train_loader)  # a second fit goes on from the first
        self.val_data = val_data
        self.scheduled.bind(self)  # every scheduled setting found, or a ConfigError naming its key
        self.task.to(self.device)
        self.epoch_sums.to(self.device)
        self.stop_requests.reset()
        self._stop_agreed = False
        self.maybe_compile()
        self.join_processes()
        if self.checkpointer is not None:
            self.checkpointer.clean_temporary()  # folders of a save killed half-way
        if resume_from is not None:
            self.resume(resume_from)
        if self.validate_every_steps and val_data is None:
            raise ConfigError(f"trainer.validate_every_steps is {self.validate_every_steps}, but fit() was given no "
                              "validation data: give val_data, or leave validate_every_steps unset")
        if self.schedule.needs_scores and val_data is None:
            raise ConfigError(f"the learning-rate schedule decides by the validation score ({self.scheduler_monitor}), "
                              "but fit() was given no validation data: give val_data, or a schedule that needs no scores")
        self._loss_finite_until = self.state.global_step
        self.nonfinite_watch.clear()
        # config.yaml, provenance.json and code/ for recipe and Python-built runs alike.
        self.config = maybe_record_run(self, train_data, val_data, test_data)
        self.call_hook("on_fit_start")
        if self.experiment is not None:
            self.experiment.stop_requests = self.stop_requests  # Experiment.stop() now asks for a clean stop
        try:
            with self.stop_requests.watching():
                while state.epoch < self.max_epochs and not self.should_stop():
                    if self.stages is not None:
                        self.stages.at_epoch_start(self)  # a stage boundary: the next stage's task, grown from this one
                    self.schedule.start_epoch(state.epoch, state.global_step)  # Newbob decides the epoch's rate
                    self.maybe_write_learning_rates()
                    self.scheduled.apply(state.global_step, state.epoch, epoch_start=True)  # before the epoch's plan
                    self.call_hook("on_epoch_start")  # also when resuming inside this epoch
                    if callable(getattr(self.train_loader, "set_epoch", None)):
                        self.train_loader.set_epoch(state.epoch)  # the epoch's batch plan (shuffling) follows the state
                    epoch_started = time.perf_counter()
                    if not self.train_epoch():
                        break  # stopped inside the epoch: no validation of a partial epoch
                    self.check_loss_finite()
                    # .item() waits for the device: once per epoch.
                    epoch_logs = {**self.epoch_sums.means("train"), "train/epoch_time_s": time.perf_counter() - epoch_started}
                    if val_data is not None:
                        metrics = self.validation_of_this_step() or self.run_validation()
                        epoch_logs.update(metrics)
                    self.end_schedule_epoch(metrics if val_data is not None else None)
                    self.log_epoch(epoch_logs)
                    self.epoch_sums.reset()
                    state.epoch += 1
                    self.call_hook("on_epoch_end")
                    self.maybe_save("epoch")  # also agrees on the stop requests, before the next epoch
                self.check_loss_finite()
                final = self.maybe_save("final")
                self.call_hook("on_fit_end")
        except BaseException as error:
            if self.experiment is not None:
                self.experiment.record_ending(error)  # status.json: crashed (or stopped)
            self.call_hook("on_exception", error)
            raise
        finally:
            if self.experiment is not None:
                self.experiment.stop_requests = None
            close = getattr(self.train_loader, "close", None)
            if callable(close):
                close()  # worker processes end with fit, not whenever garbage collection finds them
        self.maybe_raise_interrupted(final)
        self.maybe_restore_best()
        test_metrics = self.test(test_data) if test_data is not None else {}
        return maybe_write_results(self.experiment, self.config, self.results(test_metrics, wall_time=time.perf_counter() - started))

    def replace_task(self, task: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any = None,
                     schedules: dict[str, ScheduledValue] | None = None) -> None:
        """Go on training another task (a stage boundary, between epochs): moved to the device,
        compiled and wrapped for several processes as the first one was, its schedules bound."""
        self.task = check_task(task).to(self.device)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scheduled = ScheduledSettings(schedules)
        self.scheduled.bind(self)
        self._compiled = False
        self.maybe_compile()
        if self.world_size > 1:
            self.wrapped = None
            self.join_processes()

    def maybe_compile(self) -> None:
        """``compile``: compile the task's model in place (``nn.Module.compile``), once; its
        state dict keeps its names (no ``_orig_mod.``)."""
        if self.compile and not self._compiled:
            getattr(self.task, "model", self.task).compile()
            self._compiled = True

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision around a forward pass (``precision``), nothing for float32."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @property
    def sharded(self) -> bool:
        """Whether the task's parameters are sharded across processes (``parallel="fsdp"``)."""
        return self.wrapped is not None and self.wrapped.sharded

    def join_processes(self) -> None:
        """Take part in the process group of ``torch.distributed``, if several processes train
        together: wrap the task in DDP (it broadcasts rank 0's weights), learn whether rank 0
        saves checkpoints, and check that every process built the same tokenizer."""
        self.rank, self.world_size = distributed_rank_and_size()
        if self.world_size == 1:
            self.wrapped, self.saves_checkpoints = None, self.checkpointer is not None
            return
        if self.wrapped is not None and self.wrapped.task is self.task:
            return  # joined by an earlier fit (every process alike): nothing to agree again
        if self.rank != 0 and self.experiment is not None:
            raise ConfigError(f"process {self.rank} of {self.world_size} was given an experiment folder; only rank 0 "
                              "writes one: pass experiment=None on the other processes")
        self.saves_checkpoints = bool(broadcast_object(self.checkpointer is not None))
        tokenizer = getattr(self.task, "tokenizer", None)
        fingerprints = all_gather_objects(config_hash(tokenizer.to_dict()) if tokenizer is not None else None)
        if len(set(fingerprints)) > 1:
            raise ConfigError(f"the processes built different tokenizers ({fingerprints}); give every process the same "
                              "data and tokenizer options (a tokenizer file rather than one trained at the start)")
        self.wrapped = ProcessGroupWrapper(self.task, self.optimizer, self.parallel, self.training_step, self.evaluate_batch)

    def should_stop(self) -> bool:
        """The one decision to stop, asked at every boundary of the loop. Its sources:
        ``state.should_stop`` (set by callbacks, saved in checkpoints, so a run a callback
        stopped stays stopped), ``max_steps``, and the stop requests (SIGTERM, SIGINT,
        ``Experiment.stop()``; never saved, so a resumed run trains on)."""
        reached_max_steps = self.max_steps is not None and self.state.global_step >= self.max_steps
        return self.state.should_stop or reached_max_steps or self.stop_requested()

    def stop_requested(self) -> bool:
        """Whether a stop was requested: in this process, or, with several, by any as last agreed
        (:meth:`agree_on_stop`), so that every process decides alike between agreements."""
        return self.stop_requests.requested if self.world_size == 1 else self._stop_agreed

    def agree_on_stop(self, save_due: bool = False) -> bool:
        """With several processes, one collective at a point every process reaches alike (each
        update, each epoch's end, the end of fit): whether any was asked to stop (a signal, a
        callback) and whether any is due to save; returns the agreed ``save_due``."""
        if self.world_size == 1:
            return save_due
        asked, stop, due = agree(self.stop_requests.requested, self.state.should_stop, save_due)
        if asked:
            self.stop_requests.request("a stop request on another process")
        self._stop_agreed, self.state.should_stop = asked, stop
        return due

    def train_epoch(self) -> bool:
        """Train the epoch's batches that the train loader has not given yet; False if stopped inside it.

        With ``accumulate_batches`` k, each update takes the gradients of k batches (the last
        window of an epoch may be shorter); stops and saves happen between updates only, so a
        checkpoint never holds half a window. A stop that comes on the epoch's last batch lets
        the epoch finish (validation, epoch-end checkpoint), exactly as a run that goes on would.
        """
        state = self.state
        self.task.train()
        loader = self.train_loader
        description = f"epoch {state.epoch + 1}/{self.max_epochs}"
        last_batch = False  # whether the batch just trained was the epoch's last (False when unknown)
        for batch in self.until_stopped(progress(loader, self.progress_bar, description, total=batches_left(loader))):
            batch = move_to_device(batch, self.device)
            self.scheduled.apply(self.state.global_step, self.state.epoch, epoch_start=False)  # values scheduled by step
            self.call_hook("on_batch_start", batch)
            last_batch = batches_left(loader) == 0
            if not self.train_batch(batch, closes_window=last_batch or self.window.batches + 1 >= self.accumulate_batches):
                going_on = not (self.should_stop() and not last_batch)  # skipped: no step, nothing to count or save
            elif self.window.batches < self.accumulate_batches and not last_batch:
                continue  # the update waits for the window's other batches
            else:
                going_on = self.finish_window(last_batch)
            if not going_on:
                return False
        if self.window.batches:
            # The loader ended inside a window (an iterable of unknown length, or loading stopped
            # after a stop request): its batches are trained, so their update is taken.
            last_batch = batches_left(loader) == 0 or not self.should_stop()
            if not self.finish_window(last_batch):
                return False
        # Without a stop the loader ran to the epoch's end; with one, loading may have ended
        # early (see until_stopped), and the epoch is finished only if its last batch was trained.
        return last_batch or not self.should_stop()

    def train_batch(self, batch: Any, closes_window: bool) -> bool:
        """Forward and backward of one batch into the update being gathered. With several
        processes, gradients are all-reduced on the window's last batch only (DDP's ``no_sync``
        on the others). False when the batch was skipped at once: a NaN or infinite loss with
        ``on_nonfinite="skip"`` in one process (with several, every process back-propagates, so
        that the all-reduce stays in step, and the window's update is skipped by all together)."""
        synced = contextlib.nullcontext() if self.wrapped is None else self.wrapped.gradient_sync(closes_window)
        with synced:
            with self.autocast():
                output = self.wrapped.train(batch) if self.wrapped is not None else self.training_step(batch)
            finite = self.on_nonfinite == "error" or self.finite(output.loss)
            if not finite and self.wrapped is None:
                self.skip_update(batch, "loss")
                return False
            self.accumulate(output, batch, count=finite)
        self.window.synced = closes_window
        if not finite:
            self.window.nonfinite_batch = batch
        return True

    def finish_window(self, last_batch: bool) -> bool:
        """Close the gathered window: the gradients of the mean over its examples (on every
        process), the hooks after backward, clipping, then its update (or, with
        ``on_nonfinite="skip"`` and a NaN or infinite loss or gradient norm, none). False when
        the run stops inside the epoch."""
        if self.wrapped is not None and not self.window.synced:
            self.all_reduce_gradients()  # the loader ended inside a window: its last batch did not sync
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.optimizer)  # true gradients for the hooks, clipping and checks
        self.normalize_gradients()
        self.call_hook("on_after_backward")
        self.clip_gradients()
        if self.on_nonfinite == "skip":
            # fp16: gradients that overflow are the GradScaler's to skip (it lowers its scale);
            # only a NaN loss counts. After the all-reduce the norm is the same on every process;
            # a NaN loss on one process is agreed in the same collective.
            gradient_finite = self.grad_scaler is not None or self.finite(self.gradient_norm())
            (nonfinite,) = agree(self.window.nonfinite_batch is not None or not gradient_finite)
            if nonfinite:
                if self.grad_scaler is not None:
                    self.grad_scaler.update()  # ends the unscaled window it took no step for
                self.skip_update(self.window.nonfinite_batch or self.window.batch, "loss or gradient norm")
                return not (self.should_stop() and not last_batch)
        return self.take_update(self.window.output, last_batch)

    def accumulate(self, output: StepOutput, batch: Any, count: bool = True) -> None:
        """Back-propagate one batch's loss into the gradients of the update being gathered, and
        count it (epoch sums, training metrics; not when ``count`` is False: a NaN loss to skip).
        With ``accumulate_batches`` > 1 or several processes each loss is weighted by what it is
        a mean over (``StepOutput.normalizer``), and :meth:`normalize_gradients` divides by the
        total over the window and every process: the update of one batch as large as them all."""
        loss = output.loss if self.accumulate_batches == 1 and self.world_size == 1 else output.loss * output.normalizer
        if self.wrapped is not None:
            loss = self.wrapped.weighted(loss, output.normalizer)  # see cadence.parallel.TrainingStep
        (self.grad_scaler.scale(loss) if self.grad_scaler is not None else loss).backward()
        self.window.add(output, batch)
        if not count or output.batch_size == 0:  # a NaN to skip, or an empty batch's placeholder
            return
        self.epoch_sums.add(output.loss, output.losses)
        self.nonfinite_watch.add(output.loss, self.state.global_step + 1, batch)
        if self.train_metrics:
            self.score_training_batch(output)

    def take_update(self, output: StepOutput, last_batch: bool) -> bool:
        """The optimizer step of the gathered window, and what follows a step: counting, logging,
        hooks, the stop decision and the step-boundary save. False when the run stops inside the epoch."""
        state = self.state
        state.consecutive_skips = 0
        self.optimizer_step()
        state.global_step += 1
        self.maybe_log_train_metrics()
        if state.global_step % self.log_every == 0:
            self.check_loss_finite()
            # .item() waits for the device: done once per log_every steps, not per step.
            self.log({"train/loss": self.epoch_sums.window_mean(self.log_every), **self.setting_logs()}, "train")
        if self.validate_every_steps and state.global_step % self.validate_every_steps == 0 and not last_batch:
            self.log(self.run_validation(), "val")  # (the epoch's last update: validated as the epoch's)
        self.call_hook("on_batch_end", output)
        save_due = self.agree_on_stop(self.save_is_due("step", last_batch))  # several processes: one collective
        if self.should_stop() and not last_batch:
            return False
        self.maybe_save("step", last_batch=last_batch, due=save_due)
        return True

    def until_stopped(self, batches: Iterable) -> Iterator[Any]:
        """``batches``, ending quietly when loading fails after a stop: a SIGTERM sent to the
        whole process group (as SLURM's scancel does) also ends the DataLoader's workers. The
        batch that failed was not trained, so the checkpoint saved next is exact."""
        iterator = iter(batches)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except RuntimeError as error:
                if not self.should_stop():
                    raise
                self.logger.warning("loading stopped after the stop request (%s); stopping at step %d", error, self.state.global_step)
                return
            yield batch

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

    def normalize_gradients(self) -> None:
        """Divide the gradients of weighted losses (see :meth:`accumulate`) by the window's total
        weight over every process: the gradient of the mean over all of the window's examples.
        DDP's all-reduce averaged over the processes, so the world size is put back."""
        if self.accumulate_batches == 1 and self.world_size == 1:
            return
        gradients = [parameter.grad for parameter in self.task.parameters() if parameter.grad is not None]
        if not gradients:
            return
        # A tensor on the gradients' device: weights given as tensors never wait for the device.
        total = torch.as_tensor(self.window.examples, dtype=torch.float32).to(gradients[0].device)
        if self.wrapped is not None:
            mean = self.wrapped.mean_weight()  # the mean over processes of their windows' weights
            total = mean.to(total) if mean is not None else reduce_sum(total) / self.world_size
        # A total of 0 (every process's batch empty) leaves the zero gradients zero.
        torch._foreach_div_(gradients, total.clamp(min=torch.finfo(torch.float32).tiny))

    def all_reduce_gradients(self) -> None:
        """Average the gradients over the processes by hand, as DDP does on a synced backward."""
        if self.wrapped.sharded:
            raise ConfigError("parallel='fsdp' needs training data of known length (the last batch of an update must "
                              "reduce the gradients); give a DataLoader with a length, or use parallel='ddp'")
        for parameter in self.wrapped.parameters():
            if parameter.grad is not None:
                parameter.grad.copy_(reduce_sum(parameter.grad) / self.world_size)

    def optimizer_step(self) -> None:
        self.window.clear()
        self.schedule.before_update(self.state.global_step, self.state.epoch)  # this update's learning rate
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)  # not taken when a gradient overflowed
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.after_update()

    @staticmethod
    def finite(value: torch.Tensor) -> bool:
        """Whether ``value`` holds no NaN or infinity (waits for the device)."""
        return bool(torch.isfinite(full(value.detach())).all())  # a sharded norm (FSDP) is gathered

    def gradient_norm(self) -> torch.Tensor:
        """The global L2 norm of the task's gradients (0 when there are none)."""
        gradients = [parameter.grad for parameter in self.task.parameters() if parameter.grad is not None]
        return torch.nn.utils.get_total_norm(gradients) if gradients else torch.zeros(())

    def skip_update(self, batch: Any, what: str) -> None:
        """Drop this batch's update (``on_nonfinite="skip"``): no optimizer step, no scheduler
        step, gradients cleared; counted in the train state and logged with the batch's
        utterance ids. ``nonfinite_patience`` consecutive skips stop the run."""
        state = self.state
        ids = batch_ids(batch)
        if self.world_size > 1:  # every process skips together: name the batches whose loss was NaN, on any
            parts = all_gather_objects([self.window.nonfinite_batch is not None, ids])
            ids = [utterance for flagged, part in parts if flagged or not any(flag for flag, _ in parts) for utterance in part]
        self.optimizer.zero_grad(set_to_none=True)
        if self.wrapped is not None:
            self.wrapped.clear_weight()
        self.window.clear()  # the window's other batches go with it: their gradients were cleared
        state.skipped_batches += 1
        state.consecutive_skips += 1
        where = f"after step {state.global_step} (epoch {state.epoch + 1})"
        utterances = utterance_list(ids)
        if state.consecutive_skips >= self.nonfinite_patience:
            raise diverged(f"the training {what} was NaN or infinite for {state.consecutive_skips} batches in a row, "
                           f"the last {where}{utterances}: the model diverged")
        self.logger.warning("skipped a batch %s: its %s is NaN or infinite%s (%d in a row, %d skipped in all)",
                            where, what, utterances, state.consecutive_skips, state.skipped_batches)

    def evaluate_batch(self, batch: Any) -> StepOutput:
        return self.task.validation_step(batch)

    def evaluate_in_precision(self, batch: Any) -> StepOutput:
        with self.autocast():
            return self.wrapped.evaluate(batch) if self.wrapped is not None else self.evaluate_batch(batch)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, data: Iterable, split: str) -> dict[str, float]:
        """Loss, named losses and every metric over ``data``, keyed ``"<split>/<name>"``
        (:func:`cadence.evaluation.evaluate`); the task's records go to the experiment folder.
        With several processes each evaluates its share, with rank 0's buffers (batch norm
        statistics: each process last updated them with its own batch), as rank 0 saves them."""
        if self.wrapped is not None:
            broadcast_tensors(list(self.task.buffers()))
        evaluation = evaluate(self.task, data, split, self.metrics, self.device, evaluate_batch=self.evaluate_in_precision,
                              progress_bar=self.progress_bar)
        if evaluation.records and self.experiment is not None:
            save_hypotheses(self.experiment, split, evaluation.records, step=self.state.global_step)
        self.evaluated_batches = evaluation.batches
        return evaluation.metrics

    def validate(self, data: Iterable) -> dict[str, float]:
        return self.evaluate(data, "val")

    def run_validation(self) -> dict[str, float]:
        """Validate now (at an epoch's end, or every ``validate_every_steps`` updates): the
        figures, checked finite, recorded for the best model, then given to the callbacks."""
        metrics = self.validate(self.val_data)
        self.check_validation_loss_finite(metrics)
        self.track_best(metrics)
        self.call_hook("on_validation_end", metrics)
        return metrics

    def validation_of_this_step(self) -> dict[str, float] | None:
        """The figures of a validation of these very weights in this epoch, if one ran (a step
        validation on the last update of an epoch whose length the loop could not know)."""
        last = self.last_validation_here()
        if last is None or last["epoch"] != self.state.epoch + 1:
            return None
        return {key: value for key, value in last.items() if key not in ("epoch", "step")}

    def last_validation_here(self) -> dict[str, Any] | None:
        """The history's last entry if it validated these very weights (it ran at this step)."""
        last = self.state.history[-1] if self.state.history else None
        return last if last is not None and last["step"] == self.state.global_step else None

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

    def score_training_batch(self, output: StepOutput) -> None:
        """The training metrics' share of one batch: every batch whose predictions come with its
        step (classification); a text task's hypotheses (``output.decode``) only for the update
        whose metrics are logged next, as decoding every batch would slow training down."""
        predictions, targets = output.predictions, output.targets
        logged_next = (self.state.global_step + 1) % self.train_metrics_every == 0
        if predictions is None and output.decode is not None and logged_next:
            predictions, targets = output.decode()
        if predictions is not None:
            for metric in self.train_metrics:
                metric.update(predictions, targets)
        elif output.decode is None and not self._warned_unscored:
            self._warned_unscored = True
            self.logger.warning("trainer.train_metrics_every: %s gives no predictions on training batches, so no "
                                "training metric is logged; set it to 0", type(self.task).__name__)

    def maybe_log_train_metrics(self) -> None:
        """Every ``train_metrics_every`` steps, the training metrics of the batches since the last time."""
        if not self.train_metrics:
            return
        if self.state.global_step % self.train_metrics_every == 0:
            values = {}
            for metric in self.train_metrics:
                values.update({f"train/{name}": value for name, value in metric.compute().items()})
                metric.reset()
            self.log(values, "train")

    # ------------------------------------------------------------------ best model
    def validation_keys(self) -> set[str] | None:
        """The keys every validation gives (``val/loss`` and each metric's), or None when a
        metric cannot say before it has seen data. Named losses (``val/loss_ctc``) are the
        task's and are only known once it has run."""
        overridden = any(getattr(type(self), name) is not getattr(Trainer, name) for name in ("evaluate", "validate"))
        if overridden or any(not type(metric).__module__.startswith("cadence.") for metric in self.metrics):
            return None  # a validation or a metric of the user's: its keys are known once it runs
        keys = {"val/loss"}
        for metric in self.metrics:
            keys.update(f"val/{name}" for name in copy.deepcopy(metric).compute())
        return keys

    def check_monitored_keys(self) -> None:
        """Refuse, before anything trains, a monitored value that no validation will give (a typo
        would otherwise fail after a whole epoch)."""
        known = self.validation_keys()
        if known is None:
            return
        monitored = {"trainer.monitor": self.monitor}
        monitored.update({f"trainer.monitor.{index}": key for index, (key, _) in enumerate(self.monitors) if index > 0})
        if self.schedule.needs_scores:
            monitored["scheduler.monitor"] = self.scheduler_monitor
        for index, callback in enumerate(self.callbacks):
            if isinstance(callback, EarlyStopping) and callback.monitor is not None:
                monitored[f"callbacks.{index}.monitor"] = callback.monitor
        for path, key in monitored.items():
            if key not in known and not key.startswith("val/loss_"):
                raise ConfigError(
                    f"{path}: '{key}' is never among the validation results{suggest(key, known)}; "
                    f"this run's are {', '.join(sorted(known))} (and val/loss_<name> for a task's named losses)"
                )

    def metric_value(self, metrics: dict[str, float], name: str) -> float:
        if name not in metrics:
            raise ConfigError(f"monitor '{name}' is not among the validation results; choose one of: {', '.join(sorted(metrics))}")
        return float(metrics[name])

    def track_best(self, metrics: dict[str, float]) -> None:
        """Record this validation in the history and remember the weights if they are the best."""
        state = self.state
        values = [self.metric_value(metrics, key) for key, _ in self.monitors]
        epoch_number = state.epoch + 1  # 1-based, as printed in the logs
        best = self.best_values()
        state.history.append({"epoch": epoch_number, "step": state.global_step, **metrics})
        if not improves(values, best, [mode for _, mode in self.monitors]):
            return
        state.best_value, state.best_epoch, state.best_step = values[0], epoch_number, state.global_step
        if self.checkpointer is not None:
            state.best_checkpoint = checkpoint_name(state.global_step)  # saved next (SaveTriggers: improved)
        elif self.restore_best and self.rank == 0 and not self.sharded:  # (the others get rank 0's at the end)
            self._best_weights = {key: tensor.detach().to("cpu", copy=True) for key, tensor in self.task.state_dict().items()}
            self._best_stage = self.stages.state_dict() if self.stages is not None else None

    def best_values(self) -> list[float | None] | None:
        """The best validation's monitored value and tie-breakers (from the history), or None before one."""
        state = self.state
        if state.best_value is None:
            return None
        best = state.best_entry()
        return [state.best_value, *[best.get(key) for key, _ in self.monitors[1:]]]

    def monitored_value_here(self) -> float | None:
        """The monitored value of these very weights, if the last validation was at this step
        (the epoch's end, or a step validation): what a checkpoint saved now is ranked by."""
        last = self.last_validation_here()
        return self.metric_value(last, self.monitor) if last is not None else None

    def maybe_restore_best(self) -> None:
        """At the end of fit, load the best weights back (``restore_best``): rank 0 reads them,
        and with several processes sends them to the others."""
        if not self.restore_best or self.state.best_epoch is None:
            return
        best = self.best_checkpoint_path() if self.rank == 0 and (self.stages is not None or not self.sharded) else None
        saved = load_checkpoint(best)[0] if best is not None else None  # read once: its stage and its weights
        if self.stages is not None:  # the best epoch may be an earlier stage's: its task first (on every process)
            stage = (saved.get("stages") if saved is not None else self._best_stage) if self.rank == 0 else None
            self.stages.restore(self, broadcast_object(stage))
        if self.sharded:  # every process loads its shard of the best checkpoint (a collective)
            best = broadcast_object(str(self.best_checkpoint_path() or ""))
            if best:
                self.stateful_components()["task"].load_state_dict(load_checkpoint(Path(best))[0]["task"])
            return
        if self.rank == 0:
            self.load_best_weights(saved)
        broadcast_tensors(list(self.task.state_dict().values()))

    def best_checkpoint_path(self) -> Path | None:
        """The folder of the best checkpoint, when this run has one (None, with a warning, when it is gone)."""
        folder = self.checkpointer.directory if self.checkpointer is not None else None
        if folder is None and self.resumed_from is not None:
            folder = self.resumed_from.parent  # resumed without an experiment: the run's own checkpoints
        if folder is None or self.state.best_checkpoint is None:
            return None
        if not (folder / self.state.best_checkpoint).is_dir():
            self.logger.warning("the best checkpoint %s is gone; keeping the last weights", folder / self.state.best_checkpoint)
            return None
        return folder / self.state.best_checkpoint

    def load_best_weights(self, saved: dict[str, Any] | None) -> None:
        """The best weights into the task: the best checkpoint's state (``saved``, read by the
        caller), else the copy kept in memory (a run without a folder)."""
        if saved is not None:
            load_module_state(self.task, saved.get("task"), "task")
        elif self._best_weights is not None:
            self.task.load_state_dict(self._best_weights)
        else:
            return  # no best weights here (a best checkpoint that is gone was said when it was looked for)
        state = self.state
        where = f"epoch {state.best_epoch}" + (f", step {state.best_step}" if state.best_step is not None else "")
        self.logger.info("restored the best model: %s, %s = %.6g", where, self.monitor, state.best_value)

    def end_schedule_epoch(self, metrics: dict[str, float] | None) -> None:
        """Give the schedule the epoch's score (``scheduler_monitor``: loudly missing if the
        schedule decides by it) and write a LearningRateSchedule's history to the run's folder."""
        score = None
        if metrics is not None and (self.schedule.needs_scores or self.scheduler_monitor in metrics):
            score = self.metric_value(metrics, self.scheduler_monitor)
        self.schedule.end_epoch(self.state.epoch, score)
        self.maybe_write_learning_rates()

    def maybe_write_learning_rates(self) -> None:
        """``learning_rates.json``: a LearningRateSchedule's history (RETURNN's learning-rate file)."""
        if self.experiment is None:
            return
        if isinstance(self.scheduler, LearningRateSchedule):
            self.experiment.write_json("learning_rates.json", {"monitor": self.scheduler_monitor, "epochs": self.scheduler.history})
        elif isinstance(self.scheduler, ScheduleSet) and self.scheduler.histories():
            self.experiment.write_json("learning_rates.json", {"monitor": self.scheduler_monitor, "modules": self.scheduler.histories()})

    # ------------------------------------------------------------------ checkpoints
    def stateful_components(self) -> dict[str, Any]:
        """Everything restartable, by the name it has in a checkpoint, in the order it is restored."""
        return {
            "task": FullModelState(self.task) if self.sharded else self.task,
            "optimizer": FullOptimizerState(self.task, self.optimizer) if self.sharded else self.optimizer,
            "scheduler": self.scheduler,
            "grad_scaler": self.grad_scaler,
            "trainer_state": self.state,
            "epoch_sums": self.epoch_sums,
            "train_data": self.train_loader,
            "train_metrics": self.train_metrics,
            "callbacks": {f"{index}:{type(callback).__name__}": callback for index, callback in enumerate(self.callbacks)},
        }

    def rank_components(self) -> dict[str, Any]:
        """What differs between processes training together, saved for each rank (under
        ``"ranks"``) beside rank 0's full state: the loss sums, the loader's count of bad audio,
        the training metrics and (added by ``capture``) the random generators."""
        return {"epoch_sums": self.epoch_sums, "train_data": self.train_loader, "train_metrics": self.train_metrics}

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds: each component's state, every random generator, the
        resolved config, and a text task's tokenizer (ids mean nothing without it)."""
        tokenizer = getattr(self.task, "tokenizer", None)
        return {
            **capture(self.stateful_components()),
            "config": self.config,
            "tokenizer": tokenizer.to_dict() if tokenizer is not None else None,
            "stages": self.stages.state_dict() if self.stages is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` captured, random generators last; with several
        processes, then this rank's own part (see :meth:`rank_components`)."""
        if self.stages is not None:
            self.stages.restore(self, state.get("stages"))  # the saved stage's task and optimizer, to load into
        saved = state.get("trainer_state")
        if self.scheduled.settings and isinstance(saved, dict) and all(isinstance(saved.get(key), int) for key in ("epoch", "global_step")):
            # The values at the saved position first: the loader checks its position against the plan they shape.
            self.scheduled.apply(saved["global_step"], saved["epoch"], epoch_start=True)
        restore(self.stateful_components(), self.upgraded(state))
        ranks = state.get("ranks")
        if self.world_size == 1 or not ranks:
            return
        if len(ranks) == self.world_size:
            restore(self.rank_components(), ranks[self.rank])
        elif self.rank == 0:
            self.logger.warning(
                "resuming a checkpoint of %d processes on %d: the global batch plan and the weights go on, but each "
                "process's random generators start from rank 0's, so the run is not bit-identical to one that kept "
                "%d processes", len(ranks), self.world_size, len(ranks))

    def upgraded(self, state: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint from before the train loader owned the position in the epoch (cadence
        0.1.0 up to issue 10 kept it as ``TrainState.batch_in_epoch``), in today's layout, so
        that it still resumes exactly: a wrapped iterable gets the position, and a checkpoint
        taken between epochs gets empty epoch sums (they were zeroed at the next epoch's start)."""
        trainer_state = state.get("trainer_state", {})
        if "batch_in_epoch" not in trainer_state:
            return state
        trainer_state = {key: value for key, value in trainer_state.items() if key != "batch_in_epoch"}
        cursor = state["trainer_state"]["batch_in_epoch"]
        state = {**state, "trainer_state": trainer_state}
        if cursor == 0:
            state["epoch_sums"] = {name: torch.zeros_like(value) for name, value in state.get("epoch_sums", {}).items()}
        if isinstance(self.train_loader, PositionedIterable):
            state["train_data"] = {"epoch": trainer_state["epoch"], "cursor": cursor,
                                   "epoch_start_rng": state.get("epoch_start_rng"), "data": state.get("train_data")}
        return state

    def resume(self, checkpoint: str | Path) -> Path:
        """Load a checkpoint (or an experiment folder's newest one that verifies and fits) into every component.

        Called by ``fit(..., resume_from=...)``, once the training data is known (its position
        is part of the state). ``state.should_stop`` is kept: a run a callback stopped stays
        stopped. Checkpoints newer than the one resumed from belong to an abandoned run and
        are set aside in ``checkpoints/.abandoned/``.
        """
        if self.train_loader is None:
            raise ValueError("resume through fit(train_data, ..., resume_from=...): the loader's position is restored too")
        if self.rank == 0 and not self.sharded:
            path, metadata = use_first_that_fits(checkpoint, self.restore_checkpoint)
            broadcast_object(str(path))  # the others load the one rank 0 chose (it sets newer ones aside)
        elif self.rank == 0:  # sharded: loading is a collective, so all load the newest valid one together
            path = find_checkpoint(checkpoint)
            broadcast_object(str(path))
            metadata = self.restore_checkpoint(path, *load_checkpoint(path))
        else:
            path = Path(broadcast_object(None))
            metadata = self.restore_checkpoint(path, *load_checkpoint(path))
        self.resumed_from = path
        if self.checkpointer is not None and path.parent.resolve() == self.checkpointer.directory.resolve():
            self.checkpointer.set_aside_newer_than(path)
        if self.experiment is not None and path.resolve().is_relative_to(self.experiment.directory):
            # Lines and curves written after this checkpoint belong to the run that died.
            self.experiment.rewind(metadata.get("metrics_lines"), self.state.global_step)
        self.save_triggers.saved(self.position())
        self.logger.info("resumed from %s: epoch %d, step %d, batch %s of the epoch", path, self.state.epoch + 1,
                         self.state.global_step, getattr(self.train_loader, "cursor", "?"))
        return path

    def restore_checkpoint(self, path: Path, state: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
        """Load a verified checkpoint's ``state``; its ``metadata`` back. A state that does not fit
        this run (another model, or crafted) is a :class:`CheckpointError` saying what did not fit,
        and every component is then as it was before (a copy of their states is put back)."""
        missing = [name for name in ("task", "optimizer", "trainer_state", "rng") if state.get(name) is None]
        if missing:
            raise CheckpointError(f"it holds no state for {', '.join(missing)}")
        before = copy.deepcopy(self.state_dict())
        try:
            self.load_state_dict(state)
            check_optimizer_state(self.optimizer)
        except (CheckpointError, KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as error:
            self.load_state_dict(before)
            if isinstance(error, CheckpointError):
                raise
            raise CheckpointError(f"its state does not fit this run ({type(error).__name__}: {error})") from error
        return metadata

    def position(self) -> tuple[int, int]:
        """``(epoch, global_step)``: tells every checkpoint the Trainer saves apart."""
        return (self.state.epoch, self.state.global_step)

    def save_is_due(self, boundary: Boundary, last_batch: bool = False) -> bool:
        """Whether the save triggers ask for a checkpoint at this boundary of the loop ("step",
        "epoch" or "final"); always False without a checkpoint folder (on any rank)."""
        state = self.state
        return self.saves_checkpoints and self.save_triggers.should_save(
            boundary, global_step=state.global_step, last_batch=last_batch, epochs_completed=state.epoch,
            improved=state.best_step == state.global_step, position=self.position(),
        )

    def maybe_save(
        self, boundary: Boundary, last_batch: bool = False, due: bool | None = None,
    ) -> Path | None:
        """The one place that saves: asks the save triggers at this boundary of the loop
        (:meth:`save_is_due`; ``due`` when the caller asked them already), agreed by every
        process, saves if they say so, then applies retention. At the end of fit, returns the
        checkpoint of this position, saved now or before (None on ranks other than 0). A
        checkpoint of weights just validated carries their monitored value."""
        state = self.state
        if due is None:
            due = self.agree_on_stop(self.save_is_due(boundary, last_batch))
        if not due:
            if boundary == "final" and self.checkpointer is not None:
                return self.checkpointer.directory / checkpoint_name(state.global_step)
            return None
        self.check_loss_finite()
        self.check_weights_finite()  # a diverged model is never saved
        return self.save_checkpoint(monitor_value=self.monitored_value_here())

    def check_weights_finite(self) -> None:
        """Stop with an error when a weight is NaN or infinite (the step after the last finite
        loss can still blow them up); checked before each save, a pass over the weights."""
        finite = [torch.isfinite(local(parameter)).all() for parameter in self.task.parameters()
                  if not isinstance(parameter, nn.parameter.UninitializedParameter) and local(parameter).numel()]
        (diverged_here,) = agree(bool(finite) and not bool(torch.stack(finite).all()))  # each process its shard (FSDP)
        if not diverged_here:
            return
        raise diverged(f"the model's weights became NaN or infinite by step {self.state.global_step}: the model "
                       "diverged; nothing was saved after it")

    def check_validation_loss_finite(self, metrics: dict[str, float]) -> None:
        """Stop with an error when the validation loss is NaN or infinite: finite weights whose
        outputs overflow are as broken as NaN ones, and are not saved either."""
        value = metrics.get("val/loss")
        if value is None or math.isfinite(value) or self.evaluated_batches == 0:
            return  # finite, or NaN because the validation data gave no batch (nothing to judge)
        raise diverged(f"the validation loss is {value} in epoch {self.state.epoch + 1} (step {self.state.global_step}): "
                       "the model diverged; nothing was saved after it")

    def check_loss_finite(self) -> None:
        """Stop with an error once a training loss was NaN or infinite. Checked where the loop
        waits for the device anyway (logging, saving, the end of an epoch), so a run that diverged
        never saves its broken weights, nor ends as if it had trained."""
        if self.epoch_sums.loss_finite():  # the epoch's running sum keeps a NaN or an infinity
            self._loss_finite_until = self.state.global_step
            self.nonfinite_watch.clear()
            return
        step, ids = self.nonfinite_watch.first()
        if self.world_size > 1:  # the earliest over every process
            step, ids = min((found for found in all_gather_objects([step, ids]) if found[0] is not None), default=(None, []))
        where = f"at step {step}" if step is not None else f"between steps {self._loss_finite_until + 1} and {self.state.global_step}"
        raise diverged(f"the training loss became NaN or infinite {where}{utterance_list(ids)}: the model diverged; "
                       f"nothing was saved after step {self._loss_finite_until}")

    def save_checkpoint(self, monitor_value: float | None = None) -> Path | None:
        """Write a checkpoint of this moment, then apply retention (see :meth:`maybe_save`). With
        several processes every rank calls it: each one's own state (:meth:`rank_components`) is
        gathered, and rank 0 writes."""
        ranks = all_gather_objects(capture(self.rank_components())) if self.world_size > 1 else None
        if self.checkpointer is None:
            if self.sharded:
                self.state_dict()  # gathering the whole model and optimizer state takes every process
            self.save_triggers.saved(self.position())  # rank 0 saved this position
            return None
        name = checkpoint_name(self.state.global_step)
        metadata = {
            "epoch": self.state.epoch, "global_step": self.state.global_step,
            "batch_in_epoch": getattr(self.train_loader, "cursor", None),
            "monitor": self.monitor, "mode": self.mode, "monitor_value": monitor_value, "best_value": self.state.best_value,
            "metrics_lines": self.experiment.metrics_lines if self.experiment is not None else None,
            "config_sha256": config_hash(self.config) if self.config is not None else None,
        }
        if monitor_value is not None and len(self.monitors) > 1:  # this validation's tie-breakers, for retention and "best"
            last = self.state.history[-1]
            metadata["tie_breakers"] = [{"monitor": key, "mode": mode, "value": last.get(key)} for key, mode in self.monitors[1:]]
        state = self.state_dict()
        if ranks is not None:
            state["ranks"] = ranks
            metadata["world_size"] = self.world_size
        path = self.checkpointer.save(name, state, metadata)
        self.save_triggers.saved(self.position())
        protected = {name} | ({self.state.best_checkpoint} if self.state.best_checkpoint else set())
        for stale in checkpoints_to_delete(listing(self.checkpointer), self.checkpoint_policy, self.mode, protected):
            self.checkpointer.delete(stale)
        return path

    def maybe_raise_interrupted(self, checkpoint: Path | None) -> None:
        """After a stop request (a signal, ``Experiment.stop()``): say where to resume, skip the test."""
        requests = self.stop_requests
        if not self.stop_requested():
            return
        where = f"; checkpoint {checkpoint}; continue with `cadence resume {self.experiment.directory}`" if checkpoint else ""
        interrupted = TrainingInterrupted(f"training stopped by {requests.reason} at step {self.state.global_step}{where}",
                                          requests.signal_number, checkpoint)
        if self.experiment is not None:
            self.experiment.record_ending(interrupted)  # status.json: stopped
        raise interrupted

    # ------------------------------------------------------------------ logging and results
    def call_hook(self, hook: str, *arguments: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *arguments)

    def setting_logs(self) -> dict[str, float]:
        """The learning rates and the scheduled values now in effect."""
        return {**learning_rate_logs(self.optimizer), **self.scheduled.logs()}

    def log(self, values: dict[str, float], split: str) -> None:
        if self.experiment is not None:
            self.experiment.log_metrics(values, step=self.state.global_step, epoch=self.state.epoch, split=split)

    def log_epoch(self, values: dict[str, float]) -> None:
        values = {**values, **self.setting_logs()}
        self.log(values, "epoch")
        shown = {name: value for name, value in values.items() if not name.startswith(("train/lr", "train/schedule/"))}
        self.logger.info("epoch %d/%d  %s", self.state.epoch + 1, self.max_epochs, format_metrics(shown))

    def results(self, test_metrics: dict[str, float], wall_time: float) -> dict[str, Any]:
        final = None
        if self.checkpointer is not None:
            final = str(self.checkpointer.directory / (self.state.best_checkpoint or checkpoint_name(self.state.global_step)))
        return results_summary(self.state, self.monitor, self.mode, test_metrics, self.test_reports, wall_time, final)


def diverged(what: str) -> NonFiniteLoss:
    """The error of a run that went NaN or infinite: ``what`` happened, and what to try."""
    return NonFiniteLoss(f"{what}. Lower the learning rate (optimizer.lr) or the weight decay, clip gradients "
                         "(trainer.clip_grad_norm), or look for bad data (cadence data check MANIFEST)")


def batch_ids(batch: Any) -> list[str]:
    """A speech batch's utterance ids (none for other batches)."""
    return as_ids(getattr(batch, "ids", None))


def as_ids(ids: Any) -> list[str]:
    return [str(utterance) for utterance in ids] if isinstance(ids, (list, tuple)) else []


def utterance_list(ids: list[str], shown: int = 8) -> str:
    return f"; utterances {', '.join(ids[:shown])}{' ...' if len(ids) > shown else ''}" if ids else ""


class NonFiniteWatch:
    """Which step's training loss first went NaN or infinite since the last check, and that
    batch's utterance ids, at no cost per step: each step's loss (already computed) and ids
    are kept by reference, and looked at only when a check has found the epoch's sum broken."""

    def __init__(self) -> None:
        self.recent: list[tuple[int, torch.Tensor, Any]] = []  # (step, loss, the batch's ids) since the last check

    def add(self, loss: torch.Tensor, step: int, batch: Any) -> None:
        self.recent.append((step, loss.detach(), getattr(batch, "ids", None)))

    def first(self) -> tuple[int | None, list[str]]:
        """The first bad step and its utterances (None when unknown); waits for the device."""
        for step, loss, ids in self.recent:
            if not bool(torch.isfinite(loss).all()):
                return step, as_ids(ids)
        return None, []

    def clear(self) -> None:
        self.recent.clear()


def check_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Refuse an optimizer state whose per-parameter tensors (moments, momentum) do not have their
    parameter's shape: torch loads them as they are, and the first step would fail."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            for name, value in optimizer.state.get(parameter, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != parameter.shape:
                    raise CheckpointError(
                        f"the optimizer's {name} has shape {list(value.shape)} for a parameter of shape {list(parameter.shape)}"
                    )


class UpdateWindow:
    """The batches gathered for the next update: how many, how many examples, the last one and its output."""

    def __init__(self) -> None:
        self.clear()

    def add(self, output: StepOutput, batch: Any) -> None:
        self.batches += 1
        self.examples += output.normalizer
        self.output, self.batch = output, batch

    def clear(self) -> None:
        self.batches, self.examples, self.output, self.batch = 0, 0.0, None, None
        self.synced = True  # whether the last backward all-reduced the gradients (several processes)
        self.nonfinite_batch: Any = None  # a batch whose loss was NaN or infinite (several processes, skip)

