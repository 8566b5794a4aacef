"""Variational weight noise (Graves 2011; RETURNN's ``param_variational_noise``).

In training, each batch's forward and backward run at noisy weights ``w + std * N(0, 1)``;
the update is then applied to the clean weights ``w``. Where that happens in the loop
(see the map in :mod:`cadence.callbacks.base`)::

    on_batch_start      put back the clean weights if noise is still on them (the previous
                        batch of an accumulation window, or a batch whose NaN loss was
                        skipped); then save the clean values and add fresh noise
    forward, backward   the gradient is taken at the noisy point
    on_after_backward   put back the exact clean values (copies, not a subtraction: bit-exact),
                        before clipping and the optimizer step, which see clean weights

With ``accumulate_batches`` k, each of the window's k batches gets noise of its own: the noise of
one batch is removed at the next batch's ``on_batch_start`` (its gradient is already accumulated)
before that batch's noise is added, and the last batch's at ``on_after_backward``, which runs
once per window. So every update, every checkpoint (saved after it) and every evaluation sees
clean weights. Two guards cover paths that reach neither of those hooks after a noisy forward
(a skipped batch that was the epoch's last, an exception): the task's ``state_dict()`` and any
forward of a noised module while the task is in evaluation mode first put the clean weights
back. ``on_epoch_end``, ``on_fit_end`` and ``on_exception`` do so too.

``params``: fnmatch patterns over the task's trainable parameter names (``model.encoder.*``,
``*.weight``; a leading ``model.`` may be left out, as in ``optimizer.groups``); a pattern that
matches nothing is refused when fit starts (and when a recipe stage brings a new task, whose
parameters are then the ones noised). ``std`` is read at every batch, so it can be changed
(scheduled) during training; 0 adds nothing. Noise starts once ``global_step >= start_step``.

Noise is drawn from torch's global generator of each parameter's device (the same generator
dropout uses), which checkpoints save and restore, and no noisy weight outlives a step; so the
callback keeps no state, and a resumed run draws the same noise as an uninterrupted one.
Under ``parallel="fsdp"`` (sharded parameters) it refuses to start.

>>> noise = WeightNoise(std=0.01, params=["model.encoder.*"], start_step=1000)
>>> noise.std
0.01
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cadence.bounds import NonNegativeInt, PositiveFloat
from cadence.callbacks.base import Callback
from cadence.errors import ConfigError
from cadence.registry import CALLBACKS

__all__ = ["WeightNoise"]


def matches(name: str, patterns: Sequence[str]) -> bool:
    # fnmatchcase: parameter names are case-sensitive on every platform.
    relative = name.removeprefix("model.")
    return any(fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(relative, pattern) for pattern in patterns)


@CALLBACKS.register("weight_noise")
class WeightNoise(Callback):
    """Gaussian noise on the chosen weights for each training batch's forward and backward (see the module docstring)."""

    def __init__(self, std: PositiveFloat, params: str | Sequence[str] = ("*",), start_step: NonNegativeInt = 0):
        self.std = std
        self.params = (params,) if isinstance(params, str) else tuple(params)
        if not self.params:
            raise ValueError("weight_noise.params: give at least one pattern ('*' for every trainable parameter)")
        if isinstance(start_step, bool) or start_step < 0:
            raise ValueError(f"weight_noise.start_step must be >= 0, got {start_step}")
        self.start_step = start_step
        self.task: nn.Module | None = None
        self.chosen: list[nn.Parameter] = []
        self.clean: list[torch.Tensor] | None = None  # the clean values while noise is on the weights
        self.handles: list[Any] = []

    @property
    def std(self) -> float:
        return self._std

    @std.setter
    def std(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < float("inf"):
            raise ValueError(f"weight_noise.std must be a finite number >= 0, got {value!r}")
        self._std = float(value)

    @property
    def is_noisy(self) -> bool:
        """Whether noise is on the weights now."""
        return self.clean is not None

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: Any) -> None:
        if getattr(trainer, "sharded", False):
            raise ConfigError("weight_noise does not support parallel='fsdp' (sharded parameters); use parallel='ddp'")
        self.attach(trainer.task)

    def attach(self, task: nn.Module) -> None:
        """Choose ``task``'s parameters and guard them (again when a stage boundary brings a new task)."""
        self.restore()
        self.remove_guards()
        self.task = task
        self.chosen = self.chosen_parameters(self.task)
        chosen = {id(parameter) for parameter in self.chosen}
        owners = [module for module in self.task.modules()
                  if any(id(parameter) in chosen for parameter in module.parameters(recurse=False))]
        # Guards: clean weights for any state_dict() and any evaluation-mode forward (see the module docstring).
        self.handles = [self.task.register_state_dict_pre_hook(self.restore_before_state_dict)]
        self.handles += [module.register_forward_pre_hook(self.restore_before_evaluation) for module in owners]

    def on_batch_start(self, trainer: Any, batch: Any) -> None:
        self.restore()  # noise of an earlier batch whose update has not come (accumulation, a skipped batch)
        if trainer.task is not self.task:
            self.attach(trainer.task)  # a new stage's task (recipe stages)
        if self.std > 0 and trainer.state.global_step >= self.start_step:
            self.add_noise(self.std)

    def on_after_backward(self, trainer: Any) -> None:
        self.restore()  # before clipping and the optimizer step

    def on_epoch_end(self, trainer: Any) -> None:
        self.restore()

    def on_fit_end(self, trainer: Any) -> None:
        self.restore()
        self.remove_guards()

    def on_exception(self, trainer: Any, error: BaseException) -> None:
        self.restore()
        self.remove_guards()

    def state_dict(self) -> dict[str, Any]:
        return {}  # nothing to resume: the noise comes from the checkpointed generators, and never outlives a step

    # ------------------------------------------------------------------ noise
    def chosen_parameters(self, task: nn.Module) -> list[nn.Parameter]:
        named = [(name, parameter) for name, parameter in task.named_parameters() if parameter.requires_grad]
        names = [name for name, _ in named]
        for pattern in self.params:
            if not any(matches(name, [pattern]) for name in names):
                examples = ", ".join(names[:3]) or "(none are trainable)"
                raise ConfigError(f"weight_noise.params: '{pattern}' matches no trainable parameter of the task; names "
                                  f"look like {examples} (a leading 'model.' may be left out)")
        return [parameter for name, parameter in named if matches(name, self.params)]

    @torch.no_grad()
    def add_noise(self, std: float) -> None:
        """Keep the clean values, then add ``std * N(0, 1)`` from each device's global generator."""
        self.clean = [parameter.detach().clone() for parameter in self.chosen]
        for parameter in self.chosen:
            parameter.add_(torch.randn(parameter.shape, dtype=parameter.dtype, device=parameter.device), alpha=std)

    @torch.no_grad()
    def restore(self) -> None:
        """Put the exact clean values back, if noise is on the weights."""
        if self.clean is None:
            return
        for parameter, clean in zip(self.chosen, self.clean):
            parameter.copy_(clean)
        self.clean = None

    def restore_before_state_dict(self, module: nn.Module, prefix: str, keep_vars: bool) -> None:
        self.restore()

    def restore_before_evaluation(self, module: nn.Module, inputs: Any) -> None:
        # The task's mode first: in training that is all a compiled forward reads (and guards on).
        if not self.task.training and self.clean is not None:
            self.restore()

    def remove_guards(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
