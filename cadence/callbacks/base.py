"""The Callback base class and the map of where each hook is called.

The whole training loop lives in :meth:`cadence.trainer.Trainer.fit`; this is its map::

    (resume_from: every state restored from a checkpoint first)
    on_fit_start
    while state.epoch < max_epochs and not should_stop():
        stages.at_epoch_start           # a stage boundary: the next stage's task, grown from this one
        schedule.start_epoch            # the LR schedule (Newbob decides the epoch's rate)
        scheduled values, by epoch      # dropout, clipping, curriculum, ... (before the batch plan)
        on_epoch_start                  # called again when a run resumes inside this epoch, so it
                                        # must not draw random numbers or count its calls
        train_loader.set_epoch(state.epoch)
        for batch in train_loader:      # the rest of the epoch's plan: the loader owns the cursor
            scheduled values, by step
            on_batch_start(batch)
            output = task.training_step(batch)
            output.loss.backward()
            on_after_backward           # gradient checks; clipping follows right after
            schedule.before_update, optimizer step, schedule.after_update, global_step += 1
            every validate_every_steps updates (not the epoch's last): metrics = validate(val_data),
                                        # the best model tracked, on_validation_end(metrics), logged
            on_batch_end(output)        # logging, step-interval work
            if should_stop() and this is not the epoch's last batch: leave fit's loop
            maybe_save("step")          # checkpoint.every_steps / every_minutes, a new best; on the
                                        # epoch's last batch it waits for the epoch's save below
        metrics = validate(val_data)    # then the best model is tracked
        on_validation_end(metrics)      # early stopping
        schedule.end_epoch(score)       # Newbob's and plateau's score; a per-epoch PyTorch schedule steps
        state.epoch += 1
        on_epoch_end                    # epoch-interval work
        maybe_save("epoch")             # checkpoint.every_epochs, a new best, a waiting step save
    maybe_save("final")
    on_fit_end                          # then: best weights restored, test
    on_exception(error)                 # instead of the rest, if anything raised

``should_stop()`` is the one decision to stop: a callback's ``state.should_stop``,
``max_steps``, SIGTERM/SIGINT or ``Experiment.stop()``. ``maybe_save`` is the one place that
saves; :class:`~cadence.checkpoint.retention.SaveTriggers` decides.

A stop inside an epoch skips that epoch's validation: the epoch is not finished, and a
resumed run finishes it. A stop by SIGTERM/SIGINT or ``Experiment.stop()`` saves a
checkpoint and raises :class:`~cadence.errors.TrainingInterrupted` instead of testing.

Stopping is ``trainer.state.should_stop = True``, never an exception. A callback that
must survive a restart keeps its counters in ``state_dict()`` / ``load_state_dict()``;
the trainer saves them in every checkpoint.

Example, a callback that stops after a fixed number of steps::

    class StopAfter(Callback):
        def __init__(self, steps: int):
            self.steps = steps

        def on_batch_end(self, trainer, output):
            if trainer.state.global_step >= self.steps:
                trainer.state.should_stop = True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cadence.tasks.base import StepOutput
    from cadence.trainer import Trainer

HOOKS = (
    "on_fit_start",
    "on_epoch_start",
    "on_batch_start",
    "on_after_backward",
    "on_batch_end",
    "on_validation_end",
    "on_epoch_end",
    "on_fit_end",
    "on_exception",
)


class Callback:
    """Observes or adjusts the loop; override only the hooks you need."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer) -> None: ...

    def on_batch_start(self, trainer: Trainer, batch: Any) -> None: ...

    def on_after_backward(self, trainer: Trainer) -> None: ...

    def on_batch_end(self, trainer: Trainer, output: StepOutput) -> None: ...

    def on_validation_end(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...

    def on_epoch_end(self, trainer: Trainer) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...

    def on_exception(self, trainer: Trainer, error: BaseException) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
