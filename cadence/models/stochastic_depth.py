"""What the models with stochastic depth share (TDS blocks, DeepSpeech2 recurrent layers): the
drop probability's check, and a dropped block that several processes can still agree on (the
PASE task's workers use the latter too).

>>> block = torch.nn.Linear(3, 3)
>>> hidden = torch.ones(2, 3)
>>> torch.equal(passed_over(hidden, block), hidden)   # one process: the input, untouched
True
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["checked_drop_probability", "passed_over"]


def checked_drop_probability(value: float, key: str = "model.stochastic_depth") -> float:
    """``value`` as a float in [0, 1], or a ValueError naming ``key`` (a schedule reports it with its step)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{key} is a drop probability in [0, 1], got {value!r}")
    return float(value)


_STOCHASTIC_DEPTH_UNDER_FSDP = ("model.stochastic_depth skips blocks, which parallel: fsdp cannot shard: "
                                "set it to 0 or use parallel: ddp")


def passed_over(hidden: torch.Tensor, *dropped: nn.Module, fsdp_refusal: str = _STOCHASTIC_DEPTH_UNDER_FSDP) -> torch.Tensor:
    """``hidden`` in place of the output of the ``dropped`` modules (skipped for this batch).
    Also used by the PASE task for a worker that has nothing to learn from a batch, with its
    own ``fsdp_refusal``.

    With several processes, DDP expects a gradient for every parameter at every update, and a
    process that skipped a block would leave it without one (DDP's ``find_unused_parameters``
    would cost a walk of the graph at every step instead). So the dropped parameters join the
    graph with weight 0: their gradient is exactly 0, the values are unchanged. FSDP shards
    blocks and gathers them only in their own forward, so it refuses stochastic depth.
    """
    if not (torch.is_grad_enabled() and dist.is_available() and dist.is_initialized()):
        return hidden
    parameters = [parameter for module in dropped for parameter in module.parameters() if parameter.requires_grad]
    if any(type(parameter).__name__ == "DTensor" for parameter in parameters):
        raise ValueError(fsdp_refusal)
    if not parameters:
        return hidden
    return hidden + 0.0 * sum(parameter.sum() for parameter in parameters)
