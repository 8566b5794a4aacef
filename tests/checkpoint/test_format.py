"""Tests for cadence.checkpoint: exact round trips, crash consistency, damage detection, no pickle."""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import logging
import math
import os
import pickle
import random
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

import cadence.checkpoint.format as checkpoint
from cadence.checkpoint.checkpointer import Checkpointer
from cadence.checkpoint.format import is_temporary, load_checkpoint, read_metadata, save_checkpoint, verify_checkpoint
from cadence.errors import CheckpointError


def build_training(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return model, optimizer, scheduler


def train_step(model, optimizer, scheduler) -> None:
    # Draws from all three generators, so a badly restored one changes the weights.
    inputs = torch.from_numpy(np.random.randn(5, 4).astype(np.float32)) * random.uniform(0.5, 2.0)
    loss = model(inputs).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def full_state(model, optimizer, scheduler) -> dict:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
    }


def assert_trees_equal(actual, expected, where="state"):
    assert type(actual) is type(expected), where
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and torch.equal(actual, expected), where
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and np.array_equal(actual, expected), where
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for key in expected:
            assert_trees_equal(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for index, (left, right) in enumerate(zip(actual, expected)):
            assert_trees_equal(left, right, f"{where}[{index}]")
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(actual), where
    else:
        assert actual == expected, where


def test_training_state_round_trips_bit_exactly_and_resumes_identically(tmp_path):
    random.seed(1)
    np.random.seed(1)
    model, optimizer, scheduler = build_training(seed=0)
    for _ in range(2):
        train_step(model, optimizer, scheduler)
    saved = full_state(model, optimizer, scheduler)
    expected = copy.deepcopy(saved)  # `saved` views the live weights, which keep training
    save_checkpoint(tmp_path / "step-2", saved, {"epoch": 0, "global_step": 2})
    for _ in range(2):
        train_step(model, optimizer, scheduler)

    state, metadata = load_checkpoint(tmp_path / "step-2")
    assert metadata == {"epoch": 0, "global_step": 2}
    assert_trees_equal(state, expected)

    resumed_model, resumed_optimizer, resumed_scheduler = build_training(seed=123)
    resumed_model.load_state_dict(state["model"])
    resumed_optimizer.load_state_dict(state["optimizer"])
    resumed_scheduler.load_state_dict(state["scheduler"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])
    for _ in range(2):
        train_step(resumed_model, resumed_optimizer, resumed_scheduler)
    for name, tensor in model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], tensor), name
    assert resumed_scheduler.get_last_lr() == scheduler.get_last_lr()


def test_every_supported_type_round_trips(tmp_path):
    embedding = torch.nn.Embedding(5, 3)
    tied = torch.nn.Linear(3, 5, bias=False)
    tied.weight = embedding.weight  # two state dict entries, one tensor
    module_state = torch.nn.ModuleDict({"embedding": embedding, "output": tied, "norm": torch.nn.BatchNorm1d(3)}).state_dict()
    big_endian = np.arange(6, dtype=">i2").reshape(2, 3).T  # also not contiguous
    state = {
        "modules": module_state,
        "view": module_state["embedding.weight"][1:3],  # shares storage with the weight
        "int_keys": {0: "zero", 1: (1, 2.5), (2, "pair"): None},
        "floats": [float("nan"), float("inf"), float("-inf"), -0.0, 1e-300, 0.1],
        "plain": {"flag": True, "count": 2**70, "text": "é ✓", "nothing": None, "empty": {}},
        "looks_like_marker": {"__tensor__": "not a tensor"},
        "numpy": {"array": big_endian, "zero_d": np.array(3.5, dtype=np.float32), "float32": np.float32(0.1),
                  "uint64": np.uint64(2**64 - 1), "bool": np.bool_(True), "int8": np.int8(-3)},
        "torch": {"size": torch.Size([2, 3]), "dtype": torch.bfloat16, "half": torch.ones(2, dtype=torch.float16),
                  "bool": torch.tensor([True, False]), "scalar": torch.tensor(7, dtype=torch.int64)},
        "nested": [[{"a": (torch.arange(3),)}]],
    }
    save_checkpoint(tmp_path / "c", state)
    loaded, _ = load_checkpoint(tmp_path / "c", map_location=torch.device("cpu"))

    assert_trees_equal(loaded, state)
    assert loaded["modules"]._metadata == module_state._metadata
    assert loaded["modules"]["embedding.weight"] is loaded["modules"]["output.weight"]
    assert math.copysign(1.0, loaded["floats"][3]) == -1.0
    assert loaded["numpy"]["array"].dtype == np.dtype(">i2") and loaded["numpy"]["zero_d"].shape == ()
    assert type(loaded["numpy"]["float32"]) is np.float32
    assert type(loaded["torch"]["size"]) is torch.Size


def test_unsupported_type_raises_type_error_naming_the_key_path(tmp_path):
    class Opaque:
        pass

    with pytest.raises(TypeError, match=r"state\['callbacks'\]\['early_stop'\]\[1\].*Opaque"):
        save_checkpoint(tmp_path / "c", {"callbacks": {"early_stop": [0, Opaque()]}})
    with pytest.raises(TypeError, match=r"metadata\['loss'\].*Tensor"):
        save_checkpoint(tmp_path / "c", {}, {"loss": torch.tensor(1.0)})
    with pytest.raises(TypeError, match=r"state\['array'\]"):
        save_checkpoint(tmp_path / "c", {"array": np.array([object()])})
    assert list(tmp_path.iterdir()) == []  # refused before touching the disk


def test_manifest_is_written_last(tmp_path, monkeypatch):
    written = []
    real_save_file, real_write = checkpoint.save_file, checkpoint._write_durably
    monkeypatch.setattr(checkpoint, "save_file", lambda tensors, path, **kw: (written.append(Path(path).name),
                                                                              real_save_file(tensors, path, **kw)))
    monkeypatch.setattr(checkpoint, "_write_durably", lambda path, data: (written.append(path.name), real_write(path, data)))
    save_checkpoint(tmp_path / "ok", {"w": torch.ones(2)})
    assert written == ["tensors.safetensors", "state.json", "manifest.json"]

    def fail_at_manifest(path, data):
        if path.name == "manifest.json":
            raise OSError(errno.EIO, "simulated crash before the manifest")
        real_write(path, data)

    monkeypatch.setattr(checkpoint, "_write_durably", fail_at_manifest)
    with pytest.raises(CheckpointError):
        save_checkpoint(tmp_path / "crashed", {"w": torch.ones(2)})
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["ok"]


def test_overwriting_a_name_always_leaves_a_valid_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "last"
    save_checkpoint(folder, {"w": torch.zeros(3)}, {"version": 1})
    save_checkpoint(folder, {"w": torch.ones(3)}, {"version": 2})
    state, metadata = load_checkpoint(folder)
    assert metadata == {"version": 2} and torch.equal(state["w"], torch.ones(3))
    assert [entry.name for entry in tmp_path.iterdir()] == ["last"]

    # Fail the rename of the new folder into place, after the old one was moved aside.
    real_rename = os.rename
    def rename_fails_for_new_folder(source, target):
        if is_temporary(source) and Path(source).name.startswith(".tmp-"):
            raise OSError(errno.EACCES, "simulated permission error")
        real_rename(source, target)
    monkeypatch.setattr(os, "rename", rename_fails_for_new_folder)
    with pytest.raises(CheckpointError, match=str(folder)):
        save_checkpoint(folder, {"w": torch.full((3,), 3.0)}, {"version": 3})
    monkeypatch.undo()
    assert read_metadata(folder) == {"version": 2}
    assert [entry.name for entry in tmp_path.iterdir()] == ["last"]


def damage_truncate_tensors(folder: Path) -> None:
    path = folder / "tensors.safetensors"
    path.write_bytes(path.read_bytes()[:-7])


def damage_flip_state_byte(folder: Path) -> None:
    path = folder / "state.json"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def damage_extra_pickle(folder: Path) -> None:
    (folder / "evil.pkl").write_bytes(pickle.dumps({"harmless": "but unexpected"}))


@pytest.mark.parametrize("damage, problem", [
    (damage_truncate_tensors, "tensors.safetensors is .* bytes"),
    (damage_flip_state_byte, "state.json does not match its sha256"),
    (lambda folder: (folder / "state.json").unlink(), "state.json is missing"),
    (lambda folder: (folder / "manifest.json").unlink(), "manifest.json is missing"),
    (damage_extra_pickle, "unexpected file.*evil.pkl"),
    (lambda folder: (folder / "manifest.json").write_text("{not json"), "not valid JSON"),
])
def test_damaged_checkpoint_is_refused_naming_its_path(tmp_path, damage, problem):
    folder = tmp_path / "step-1"
    save_checkpoint(folder, {"model": torch.nn.Linear(3, 2).state_dict(), "step": 1})
    damage(folder)
    for read in (verify_checkpoint, load_checkpoint, read_metadata):
        with pytest.raises(CheckpointError, match=problem) as raised:
            read(folder)
        assert str(folder) in str(raised.value)


def replace_state_json(folder: Path, tree) -> None:
    """Swap in a crafted state.json and fix the manifest, as an attacker would."""
    data = json.dumps(tree).encode()
    (folder / "state.json").write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["state.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_crafted_state_json_cannot_execute_anything(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a checkpoint load reached an unpickler")

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(module, name, forbidden)
    source = Path(checkpoint.__file__).read_text()
    assert "torch.load" not in source and "import pickle" not in source

    folder = tmp_path / "c"
    save_checkpoint(folder, {"w": torch.ones(2)})
    marker_file = tmp_path / "pwned"
    payload = f"cos\nsystem\n(S'touch {marker_file}'\ntR."  # a classic pickle exploit, as text
    replace_state_json(folder, {"w": {"__reduce__": payload}, "code": payload, "__class__": "os.system"})
    state, _ = load_checkpoint(folder)
    assert state["code"] == payload and state["w"] == {"__reduce__": payload}  # plain data, nothing ran
    assert not marker_file.exists()

    for crafted in ({"__dtype__": "load"}, {"__numpy_scalar__": {"dtype": "O", "value": payload}},
                    {"__ndarray__": {"tensor": "w", "dtype": "O", "shape": [1]}}, {"__tensor__": "../../etc/passwd"},
                    {"__dict__": [[[1, 2], "unhashable key"]]}, {"__float__": "1e308"}):
        replace_state_json(folder, {"x": crafted})
        with pytest.raises(CheckpointError, match=str(folder)):
            load_checkpoint(folder)


@pytest.mark.parametrize("failing_call, error_number", [("fsync", errno.ENOSPC), ("rename", errno.EACCES)])
def test_os_error_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failing_call, error_number):
    folder = tmp_path / "last"
    save_checkpoint(folder, {"w": torch.zeros(4)}, {"global_step": 1})

    def fail(*args, **kwargs):
        raise OSError(error_number, os.strerror(error_number))
    monkeypatch.setattr(os, failing_call, fail)
    with pytest.raises(CheckpointError, match=str(folder)) as raised:
        save_checkpoint(folder, {"w": torch.ones(4)}, {"global_step": 2})
    monkeypatch.undo()

    assert isinstance(raised.value.__cause__, OSError) and raised.value.__cause__.errno == error_number
    assert [entry.name for entry in tmp_path.iterdir()] == ["last"]  # no .tmp- folder left
    state, metadata = load_checkpoint(folder)
    assert metadata == {"global_step": 1} and torch.equal(state["w"], torch.zeros(4))


def test_checkpointer_orders_by_global_step_and_skips_a_damaged_latest(tmp_path, caplog):
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    assert checkpointer.list() == [] and checkpointer.latest() is None
    for step in (9, 10, 11):  # "step-10" < "step-9" as strings: the step must decide
        checkpointer.save(f"step-{step}", {"w": torch.full((2,), float(step))}, {"global_step": step})
    (tmp_path / "checkpoints" / ".tmp-step-12-deadbeef").mkdir()  # a killed save
    assert [path.name for path in checkpointer.list()] == ["step-9", "step-10", "step-11"]
    assert checkpointer.latest().name == "step-11"

    damage_truncate_tensors(tmp_path / "checkpoints" / "step-11")
    with caplog.at_level(logging.WARNING, logger="cadence"):
        assert checkpointer.latest().name == "step-10"
    assert any("step-11" in record.getMessage() for record in caplog.records)
    state, metadata = checkpointer.load("step-10")
    assert metadata["global_step"] == 10 and torch.equal(state["w"], torch.full((2,), 10.0))


def test_checkpointer_cleans_temporary_folders_and_restores_an_orphaned_old_checkpoint(tmp_path):
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save("last", {"w": torch.ones(1)}, {"global_step": 5})
    # A save killed between "old -> .trash-" and ".tmp- -> final" leaves exactly this:
    os.rename(tmp_path / "last", tmp_path / ".trash-last-0badf00d")
    (tmp_path / ".tmp-last-0badf00d").mkdir()
    (tmp_path / ".tmp-last-0badf00d" / "state.json").write_text("{}")
    assert checkpointer.list() == []

    removed = checkpointer.clean_temporary()
    assert [path.name for path in removed] == [".tmp-last-0badf00d"]
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["last"]
    assert read_metadata(tmp_path / "last") == {"global_step": 5}


def test_checkpointer_delete_and_name_checks(tmp_path):
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save("a", {"w": torch.ones(1)})
    checkpointer.delete("a")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CheckpointError, match="no such folder"):
        checkpointer.delete("a")
    for bad_name in ("../escape", ".hidden", "", ".tmp-x"):
        with pytest.raises(CheckpointError, match="name"):
            checkpointer.save(bad_name, {})
    with pytest.raises(CheckpointError, match="reserved"):
        save_checkpoint(tmp_path / ".trash-x", {})
    assert is_temporary(tmp_path / ".tmp-a-1234") and not is_temporary(tmp_path / "a")


def strict_json_loads(text: str):
    """What a strict parser (JavaScript's, jq's, Go's) accepts: no NaN, Infinity or -Infinity."""
    def refuse(constant):
        raise ValueError(f"bare {constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_non_finite_floats_are_strict_json_on_disk_and_come_back_as_the_same_floats(tmp_path):
    # A callback's best value before any validation (inf), a NaN loss kept in a metric's state,
    # the monitored value of a diverged epoch: exact resume needs each one back as it was.
    state = {"callbacks": {"early_stopping": {"best": math.inf, "last": math.nan, "wait": 1}},
             "values": [-math.inf, 0.5], "tuple": (math.nan,), "numpy": np.float32("nan")}
    metadata = {"global_step": 3, "monitor_value": math.nan, "best_value": math.inf, "worst": -math.inf}
    save_checkpoint(tmp_path / "c", state, metadata)
    for name in ("state.json", "manifest.json"):
        strict_json_loads((tmp_path / "c" / name).read_text())  # no bare NaN / Infinity anywhere
    loaded, loaded_metadata = load_checkpoint(tmp_path / "c")
    best, last = loaded["callbacks"]["early_stopping"]["best"], loaded["callbacks"]["early_stopping"]["last"]
    assert type(best) is float and best == math.inf and math.isnan(last)
    assert loaded["values"][0] == -math.inf and math.isnan(loaded["tuple"][0])
    assert type(loaded["numpy"]) is np.float32 and np.isnan(loaded["numpy"])
    assert math.isnan(loaded_metadata["monitor_value"]) and loaded_metadata["best_value"] == math.inf
    assert loaded_metadata["worst"] == -math.inf and read_metadata(tmp_path / "c")["best_value"] == math.inf


def test_a_checkpoint_holding_bare_nan_and_infinity_tokens_still_loads(tmp_path):
    # No cadence writes them, but a checkpoint written by hand or by an older tool may hold
    # Python json's NaN / Infinity; reading stays lenient so that such a checkpoint resumes.
    folder = tmp_path / "c"
    save_checkpoint(folder, {"w": torch.ones(1)}, {"global_step": 1})
    data = b'{"w": {"__tensor__": "w"}, "best": NaN, "top": Infinity, "low": -Infinity}'
    (folder / "state.json").write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["state.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest).replace('"global_step": 1', '"global_step": 1, "best_value": NaN'))
    state, metadata = load_checkpoint(folder)
    assert math.isnan(state["best"]) and state["top"] == math.inf and state["low"] == -math.inf
    assert math.isnan(metadata["best_value"]) and torch.equal(state["w"], torch.ones(1))
