"""Carry a model's parameters into a bigger one: the copy at a stage boundary (RETURNN's
pretraining, where a network grows in width and depth between epochs).

Each tensor of the new module's state dict is, by name:

- ``copied`` when the old one has the same shape;
- ``grown`` when no dimension shrank: the old values go into the *leading block* of each
  dimension. A dimension made of several blocks is grown block by block: the gates of a
  recurrent layer (``nn.GRU``: reset, update, new; ``nn.LSTM``: input, forget, cell, output)
  are stacked along dimension 0 of ``weight_ih``/``weight_hh``/``bias_*``, so a GRU grown
  from 128 to 192 units takes old rows ``[g*128, (g+1)*128)`` into new rows
  ``[g*192, g*192 + 128)`` for each gate g; the input of layers above the first of a
  multi-layer bidirectional ``nn.GRU``/``nn.LSTM`` is two blocks (forward, backward). A
  module may say how its own tensors are made of blocks with a ``growth_blocks`` attribute
  (``{"weight": (1, 2)}``: one block along dimension 0, two along dimension 1).
  The rest of the grown tensor keeps its fresh initialisation, or is zeroed with
  ``fill="zero"``: new units then start silent, so that (for a width-grown network whose
  nonlinearities map 0 to 0) the outputs are those of the old network;
- ``new`` when the old state has no tensor of that name (a layer added in depth), or its
  shape shrank or changed rank: it keeps its fresh initialisation.

Old tensors with no place in the new module are reported as ``dropped``.

>>> small, big = nn.GRU(4, 2), nn.GRU(4, 3)
>>> report = grow_into(small.state_dict(), big)
>>> report.actions["weight_hh_l0"], torch.equal(big.weight_hh_l0[3:5, :2], small.weight_hh_l0[2:4])
('grown (6, 2) -> (9, 3)', True)
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Literal

import torch
from torch import nn

__all__ = ["GrowthReport", "grow_into"]

GATES = {nn.GRU: 3, nn.LSTM: 4, nn.RNN: 1}


@dataclasses.dataclass
class GrowthReport:
    actions: dict[str, str]  # new module's tensor name -> copied / grown (old) -> (new) / new (why)
    dropped: list[str]  # old tensors with no place in the new module

    def counts(self) -> dict[str, int]:
        kinds = [action.split(" ")[0] for action in self.actions.values()]
        return {kind: kinds.count(kind) for kind in ("copied", "grown", "new")} | {"dropped": len(self.dropped)}

    def summary(self) -> str:
        counts = self.counts()
        grown = [f"{name} {action.removeprefix('grown ')}" for name, action in self.actions.items() if action.startswith("grown")]
        new = [name for name, action in self.actions.items() if action.startswith("new")]
        lines = [", ".join(f"{count} {kind}" for kind, count in counts.items())]
        if grown:
            lines.append("grown: " + "; ".join(grown))
        if new:
            lines.append("new: " + ", ".join(new))
        if self.dropped:
            lines.append("dropped: " + ", ".join(self.dropped))
        return "\n".join(lines)


@torch.no_grad()
def grow_into(old_state: dict[str, torch.Tensor], module: nn.Module, fill: Literal["init", "zero"] = "init") -> GrowthReport:
    """Copy ``old_state`` (a state dict) into ``module``'s tensors in place, as the module
    docstring says; what happened to each tensor comes back in the report."""
    actions: dict[str, str] = {}
    new_state = module.state_dict(keep_vars=True)
    for name, target in new_state.items():
        old = old_state.get(name)
        if old is None:
            actions[name] = "new (not in the old model)"
            continue
        old = old.detach().to(device=target.device, dtype=target.dtype)
        if old.shape == target.shape:
            target.copy_(old)
            actions[name] = "copied"
        elif old.dim() == target.dim() and all(o <= n for o, n in zip(old.shape, target.shape)):
            if fill == "zero":
                target.zero_()
            target[positions(old.shape, target.shape, blocks_of(module, name, target.dim()))] = old
            actions[name] = f"grown {tuple(old.shape)} -> {tuple(target.shape)}"
        else:
            actions[name] = f"new (was {tuple(old.shape)}, now {tuple(target.shape)}: a dimension shrank or the rank changed)"
    dropped = [name for name in old_state if name not in new_state]
    return GrowthReport(actions, dropped)


def positions(old: torch.Size, new: torch.Size, blocks: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """Index tensors (for advanced indexing) of where each old element goes: per dimension,
    block j of the old size lands at the start of block j of the new size."""
    per_dimension = []
    for old_size, new_size, count in zip(old, new, blocks):
        if old_size % count or new_size % count:
            count = 1  # sizes that are not whole blocks: the leading block of the whole dimension
        old_block, new_block = old_size // count, new_size // count
        per_dimension.append(torch.tensor([j * new_block + r for j in range(count) for r in range(old_block)]))
    return tuple(torch.meshgrid(*per_dimension, indexing="ij")) if per_dimension else ()


def blocks_of(module: nn.Module, name: str, rank: int) -> tuple[int, ...]:
    """How many blocks each dimension of tensor ``name`` is made of (1 unless known)."""
    owner_name, _, tensor_name = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    declared = getattr(owner, "growth_blocks", {}).get(tensor_name)
    if declared is not None:
        return tuple(declared) + (1,) * (rank - len(declared))
    gates = next((count for kind, count in GATES.items() if isinstance(owner, kind)), None)
    if gates is None or not tensor_name.startswith(("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
        return (1,) * rank
    layer = int(tensor_name.split("_l")[1].split("_")[0])
    directions = 2 if owner.bidirectional and tensor_name.startswith("weight_ih") and layer > 0 else 1
    return tuple(itertools.islice((gates, directions, 1, 1), rank))
