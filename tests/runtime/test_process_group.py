"""The process group's life in one process: joined from torchrun's variables, left before exit."""

from __future__ import annotations

import socket

import torch.distributed as dist

from cadence.runtime.distributed import init_from_environment, leave_process_group


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_group_joined_from_the_environment_is_left_and_leaving_twice_is_harmless(monkeypatch):
    # A short timeout: should another process take the port meanwhile, this fails instead of waiting.
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(free_port()), "CADENCE_DIST_TIMEOUT_S": "30"}.items():
        monkeypatch.setenv(name, value)
    try:
        assert init_from_environment() == (0, 1)
        assert dist.is_initialized()
        leave_process_group(finished=True)  # the barrier of a finished program, then the shutdown
        assert not dist.is_initialized()
        leave_process_group()
    finally:
        if dist.is_initialized():  # never leave a group behind for the other tests
            dist.destroy_process_group()


def test_without_torchrun_there_is_no_group_to_join_or_leave(monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert init_from_environment() == (0, 1)
    assert not dist.is_initialized()
    leave_process_group()
