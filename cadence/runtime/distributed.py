"""What cadence needs of ``torch.distributed``: the process group torchrun describes, and the
few collectives the loop agrees through.

cadence never launches processes: ``torchrun --nproc-per-node N -m cadence train RECIPE``
starts them and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_from_environment` joins the group they describe (gloo on CPU,
nccl on CUDA). Without those variables, or with one process, everything here is a no-op and
nothing waits.

Every function that communicates is a *collective*: all ranks call it at the same point of
the loop, or they wait for each other forever. The loop keeps them at points every rank
reaches the same number of times (an update, an epoch's end, a save), never in a branch
that depends on one rank's data.

Objects travel between ranks as bytes of :func:`encode` (JSON, with tensors and arrays as
base64 of their raw bytes), never as pickles.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "agree", "all_gather_objects", "broadcast_object", "broadcast_tensors", "decode", "distributed_rank_and_size", "encode",
    "init_from_environment", "is_main_process", "leave_process_group", "reduce_sum", "world_size",
]

# Long enough for a rank 0 that saves a large checkpoint while the others wait at the next
# collective; short enough that a rank lost without its process ending is an error, not a hang.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)


def distributed_rank_and_size() -> tuple[int, int]:
    """(rank, world size) of the initialised ``torch.distributed`` process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def world_size() -> int:
    return distributed_rank_and_size()[1]


def is_main_process() -> bool:
    """Rank 0, the one that writes the experiment folder (also True without a process group)."""
    return distributed_rank_and_size()[0] == 0


def init_from_environment(timeout: datetime.timedelta | None = None) -> tuple[int, int]:
    """Join the process group torchrun's environment describes, if any; (rank, world size).

    The backend is nccl when CUDA is available (each process then uses the GPU of its
    ``LOCAL_RANK``), gloo otherwise. ``CADENCE_DIST_TIMEOUT_S`` sets how long a collective
    waits for a missing rank (default 30 minutes). Called again, it returns the group joined.
    """
    if dist.is_available() and dist.is_initialized():
        return distributed_rank_and_size()
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return 0, 1  # not started by torchrun (or another launcher that sets these)
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; run with one process, without torchrun")
    if timeout is None and os.environ.get("CADENCE_DIST_TIMEOUT_S"):
        timeout = datetime.timedelta(seconds=float(os.environ["CADENCE_DIST_TIMEOUT_S"]))
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"  # nccl for tensors on the GPU, gloo for the small CPU ones
    timeout = timeout or DEFAULT_TIMEOUT
    store, rank, size = next(dist.rendezvous("env://", timeout=timeout))
    # Each torchrun restart (--max-restarts) meets in keys of its own: the agent's store keeps the
    # first attempt's addresses, and gloo would dial a dead process's port and fail to start.
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.PrefixStore(f"cadence/attempt-{attempt}", store)
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=size, timeout=timeout)
    return distributed_rank_and_size()


def leave_process_group(finished: bool = False) -> None:
    """Shut the process group down, if one was joined: at the end of a program, before the
    interpreter exits. Left to the interpreter's exit instead, gloo's threads may still be
    running while C++ objects are destroyed, and a process that finished its work can abort
    (seen as "terminate called without an active exception" and exit code -6 or -11 under torchrun).

    ``finished``: every rank got to the end of its work, so wait for them all (a barrier) first.
    Without it a rank could tear its connections down while a peer's last messages were still
    on their way, which aborted about one launch in four of the two-process tests; with it, none
    in sixteen. After an error (``finished`` False) it waits for no other rank, and a barrier that
    fails (a peer is gone) does not keep the group from being shut down."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished:
        try:
            dist.barrier()
        except RuntimeError:  # a peer ended without reaching here: shut down all the same
            pass
    dist.destroy_process_group()


def collective_device() -> torch.device:
    """Where a collective's tensors live: the current GPU under nccl alone, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all ranks (a new tensor on ``tensor``'s device); ``tensor`` itself without a group."""
    if world_size() == 1:
        return tensor
    reduced = tensor.detach().to(collective_device(), copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(tensor.device)


def agree(*flags: bool) -> tuple[bool, ...]:
    """For each flag, whether any rank raised it: one small all-reduce for all of them."""
    if world_size() == 1:
        return tuple(bool(flag) for flag in flags)
    votes = torch.tensor([int(bool(flag)) for flag in flags], dtype=torch.int64, device=collective_device())
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return tuple(bool(vote) for vote in votes.tolist())


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` (see :func:`encode` for what may be in it), in rank order."""
    if world_size() == 1:
        return [value]
    device = collective_device()
    payload = torch.frombuffer(bytearray(encode(value)), dtype=torch.uint8).to(device)
    sizes = [torch.zeros((), dtype=torch.int64, device=device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor(payload.numel(), dtype=torch.int64, device=device))
    longest = max(int(size) for size in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: payload.numel()] = payload
    gathered = [torch.empty(longest, dtype=torch.uint8, device=device) for _ in range(world_size())]
    dist.all_gather(gathered, padded)
    return [decode(bytes(chunk[: int(size)].cpu().numpy())) for chunk, size in zip(gathered, sizes)]


def broadcast_object(value: Any, source: int = 0) -> Any:
    """``value`` as rank ``source`` has it, on every rank."""
    if world_size() == 1:
        return value
    return all_gather_objects(value if distributed_rank_and_size()[0] == source else None)[source]


def broadcast_tensors(tensors: list[torch.Tensor], source: int = 0) -> None:
    """Overwrite ``tensors`` (in place, on every rank) with rank ``source``'s."""
    if world_size() == 1:
        return
    device = collective_device()
    for tensor in tensors:
        sent = tensor.detach().to(device)
        dist.broadcast(sent, src=source)
        with torch.no_grad():
            tensor.copy_(sent)


# ------------------------------------------------------------------ pickle-free encoding
def encode(value: Any) -> bytes:
    """``value`` (nested dicts with string keys, lists, tuples, numbers, strings, None, tensors
    and numpy arrays) as bytes of JSON. Tuples come back as lists."""
    return json.dumps(_to_json(value), separators=(",", ":"), allow_nan=True).encode("utf-8")


def decode(data: bytes) -> Any:
    return _from_json(json.loads(data.decode("utf-8")))


def _to_json(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        return {"__tensor__": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape),
                "data": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        return {"__ndarray__": array.dtype.str, "shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError(f"only string keys travel between ranks, got {sorted(map(repr, value))[:3]}")
        return {key: _to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a {type(value).__name__} cannot travel between ranks (tensors, arrays, numbers, strings, lists and dicts can)")


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            raw = bytearray(base64.b64decode(value["data"]))
            dtype = getattr(torch, value["__tensor__"])
            flat = torch.frombuffer(raw, dtype=torch.uint8).view(dtype) if raw else torch.zeros(0, dtype=dtype)
            return flat.reshape(value["shape"]).clone()
        if "__ndarray__" in value:
            raw = base64.b64decode(value["data"])
            return np.frombuffer(raw, dtype=np.dtype(value["__ndarray__"])).reshape(value["shape"]).copy()
        return {key: _from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    return value
