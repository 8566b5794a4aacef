"""How the Trainer's task is spread over several processes: DDP or FSDP2.

Both wrap :class:`TrainingStep`, a module whose ``forward`` is the Trainer's training (or
evaluation) step: DDP prepares its gradient all-reduce in its forward, and FSDP2 gathers the
sharded parameters in the forward of the module it was applied to, so the step must run inside
one. :class:`ProcessGroupWrapper` gives the loop one interface over either:

- ``ddp``: every process holds the whole model; gradients are all-reduced in backward.
- ``fsdp``: ``torch.distributed.fsdp.fully_shard`` on each block of the model (the items of its
  ``ModuleList``s and ``Sequential``s) and on the step: parameters, gradients and optimizer
  state are sharded across processes, for models that do not fit one device. The optimizer is
  pointed at the sharded parameters. Checkpoints hold full, unsharded state dicts
  (``torch.distributed.checkpoint.state_dict`` with ``full_state_dict``), saved by rank 0 in
  cadence's own format: no ``torch.distributed.checkpoint`` metadata pickle is ever written or read.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cadence.tasks.base import StepOutput, is_empty_batch, placeholder_step

__all__ = ["FullModelState", "FullOptimizerState", "ProcessGroupWrapper", "TrainingStep", "full", "local"]


class TrainingStep(nn.Module):
    """The Trainer's steps as a module's ``forward``. A process whose batch is empty (every
    utterance unusable) takes a placeholder step, so that no process waits for it.

    With ``carries_weight`` (DDP), ``weight_sum`` is a zero parameter in no optimizer: the
    trainer adds ``weight_sum * weight`` to each loss, so its gradient is the weight of the
    batches back-propagated, and DDP's all-reduce brings the mean weight over processes with
    the gradients: the update needs no collective of its own.
    """

    def __init__(self, task: nn.Module, train: Callable[[Any], StepOutput], evaluate: Callable[[Any], StepOutput],
                 carries_weight: bool):
        super().__init__()
        self.task = task  # a submodule: the wrapper reduces (or shards) its parameters
        self.train_step, self.evaluate_step = train, evaluate
        device = next((parameter.device for parameter in task.parameters()), None)
        self.weight_sum = nn.Parameter(torch.zeros((), device=device)) if carries_weight else None

    def forward(self, batch: Any, evaluate: bool = False) -> StepOutput:
        if evaluate:
            return self.evaluate_step(batch)
        return placeholder_step(self.task) if is_empty_batch(batch) else self.train_step(batch)


class ProcessGroupWrapper:
    """The task wrapped for several processes (``parallel``: "ddp" or "fsdp"), with what the
    loop needs of it: the steps, gradient sync on or off, the update's total weight."""

    def __init__(self, task: nn.Module, optimizer: torch.optim.Optimizer, parallel: str,
                 train: Callable[[Any], StepOutput], evaluate: Callable[[Any], StepOutput]):
        self.task, self.parallel = task, parallel
        self.step = TrainingStep(task, train, evaluate, carries_weight=parallel == "ddp")
        if parallel == "ddp":
            self.module: nn.Module = DistributedDataParallel(self.step)  # broadcasts rank 0's weights
        else:
            self.module = shard(self.step, optimizer)

    @property
    def sharded(self) -> bool:
        return self.parallel == "fsdp"

    def train(self, batch: Any) -> StepOutput:
        return self.module(batch)

    def evaluate(self, batch: Any) -> StepOutput:
        """An evaluation step; through the sharded module (which gathers its parameters) under FSDP."""
        return self.module(batch, evaluate=True) if self.sharded else self.step.evaluate_step(batch)

    @contextlib.contextmanager
    def gradient_sync(self, enabled: bool) -> Iterator[None]:
        """Reduce gradients in the backward passes inside (``enabled``), or keep them local
        (the batches of an accumulation window before its last)."""
        if enabled:
            yield
        elif self.sharded:
            self.module.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.module.set_requires_gradient_sync(True)
        else:
            with self.module.no_sync():
                yield

    def weighted(self, loss: torch.Tensor, weight: float) -> torch.Tensor:
        """``loss`` with the batch's weight added to what the gradient all-reduce carries (DDP)."""
        return loss + self.step.weight_sum * weight if self.step.weight_sum is not None else loss

    def mean_weight(self) -> torch.Tensor | None:
        """The mean over processes of the weight back-propagated since the last update (DDP), then
        cleared; None when it must be reduced by hand (FSDP)."""
        weight_sum = self.step.weight_sum
        if weight_sum is None:
            return None
        mean = weight_sum.grad if weight_sum.grad is not None else torch.zeros_like(weight_sum)
        weight_sum.grad = None
        return mean

    def clear_weight(self) -> None:
        if self.step.weight_sum is not None:
            self.step.weight_sum.grad = None

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.module.parameters()


def shard(step: TrainingStep, optimizer: torch.optim.Optimizer) -> nn.Module:
    """``fully_shard`` each block of the task, then the step itself (the root), over all
    processes; the optimizer's parameter groups are pointed at the sharded parameters."""
    # Imported here: FSDP's modules take about a second to import, which only a sharded run pays.
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if optimizer.state:
        raise ValueError("parallel='fsdp' shards the parameters before the first step; the optimizer has state already")
    names = {id(parameter): name for name, parameter in step.task.named_parameters()}
    groups = [[names[id(parameter)] for parameter in group["params"]] for group in optimizer.param_groups]
    device = next(step.task.parameters()).device
    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    for block in blocks(step.task):
        fully_shard(block, mesh=mesh)
    fully_shard(step, mesh=mesh)
    sharded = dict(step.task.named_parameters())
    for group, group_names in zip(optimizer.param_groups, groups):
        group["params"] = [sharded[name] for name in group_names]
    return step


def blocks(task: nn.Module) -> list[nn.Module]:
    """The items of every ``ModuleList`` and ``Sequential`` that hold parameters (layers of
    the model): each becomes an FSDP unit, gathered only while it computes. Outermost first;
    an item inside one already taken is a unit of its own too (FSDP nests them)."""
    found = []
    for module in task.modules():
        if isinstance(module, (nn.ModuleList, nn.Sequential)):
            found.extend(item for item in module if any(True for _ in item.parameters()))
    return found


def local(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded tensor's (a DTensor's) part on this process; a plain tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def full(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded tensor (a DTensor) gathered whole (a collective); a plain tensor itself."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def state_dict_functions():
    """``torch.distributed.checkpoint.state_dict``, and its options: gathering whole state to rank 0
    on the CPU, and loading whole state (each process keeps its shard). Imported when first used."""
    from torch.distributed.checkpoint import state_dict

    gather = state_dict.StateDictOptions(full_state_dict=True, cpu_offload=True)
    return state_dict, gather, state_dict.StateDictOptions(full_state_dict=True)


class FullModelState:
    """A sharded task's state as a checkpoint holds it: whole tensors under the task's own
    names. Both methods are collectives (every process calls them; rank 0's result is saved)."""

    def __init__(self, task: nn.Module):
        self.task = task

    def state_dict(self) -> dict[str, Any]:
        functions, gather, _ = state_dict_functions()
        return functions.get_model_state_dict(self.task, options=gather)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        functions, _, whole = state_dict_functions()
        functions.set_model_state_dict(self.task, state, options=whole)


class FullOptimizerState:
    """A sharded task's optimizer state, whole, keyed by parameter names (collectives, as above)."""

    def __init__(self, task: nn.Module, optimizer: torch.optim.Optimizer):
        self.task = task
        # A per_module OptimizerSet: torch's functions take its members as a list, keyed together by name.
        members = getattr(optimizer, "optimizers", None)
        self.optimizers = list(members.values()) if isinstance(members, dict) else optimizer

    def state_dict(self) -> dict[str, Any]:
        functions, gather, _ = state_dict_functions()
        return functions.get_optimizer_state_dict(self.task, self.optimizers, options=gather)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        functions, _, whole = state_dict_functions()
        functions.set_optimizer_state_dict(self.task, self.optimizers, state, options=whole)
