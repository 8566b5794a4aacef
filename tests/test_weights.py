"""Initialisation, preloading and freezing by name (cadence.weights)."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cadence.checkpoint.checkpointer import Checkpointer, checkpoint_name
from cadence.data.dataset import Batch
from cadence.data.tokenizers import WordTokenizer
from cadence.errors import CheckpointError, ConfigError
from cadence.models.deepspeech2 import DeepSpeech2
from cadence.tasks import CTCTask
from cadence.weights import describe_report, freeze_parameters, initialize_parameters, preload_from_files

WORDS = ["one two three", "three", "two two one", "one"]
MORE_WORDS = WORDS + ["four five six seven eight"]  # 8 words: the new model has 9 classes, the old one 4


def ds2_task(words: list[str], rnn_layers: int = 2, seed: int = 0) -> CTCTask:
    torch.manual_seed(seed)
    tokenizer = WordTokenizer.from_texts(words)
    model = DeepSpeech2(len(tokenizer) + 1, n_mels=16, conv_channels=4, rnn_hidden=8, rnn_layers=rnn_layers,
                        bidirectional=False, dropout=0.0)
    return CTCTask(model, tokenizer=tokenizer)


def trained_ds2(steps: int = 5) -> CTCTask:
    """A DS2 trained a few steps on random features: weights and batch-norm statistics that no
    fresh model has."""
    task = ds2_task(WORDS)
    generator = torch.Generator().manual_seed(0)
    targets = [task.tokenizer.encode(text) for text in WORDS]
    padded = torch.zeros(len(WORDS), max(map(len, targets)), dtype=torch.long)
    for row, tokens in enumerate(targets):
        padded[row, : len(tokens)] = torch.tensor(tokens)
    batch = Batch(inputs=torch.randn(4, 16, 40, generator=generator), input_lengths=torch.tensor([40, 30, 36, 20]),
                  targets=padded, target_lengths=torch.tensor([len(tokens) for tokens in targets]),
                  ids=[f"utt{index}" for index in range(4)], speakers=["s"] * 4)
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        task.training_step(batch).loss.backward()
        optimizer.step()
    return task


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """An experiment folder with two checkpoints: preload must take the newest (step 5)."""
    folder = tmp_path_factory.mktemp("old_run")
    checkpointer = Checkpointer(folder / "checkpoints")
    checkpointer.save(checkpoint_name(1), {"task": ds2_task(WORDS, seed=7).state_dict()}, {"global_step": 1})
    trained = trained_ds2()
    checkpointer.save(checkpoint_name(5), {"task": trained.state_dict()}, {"global_step": 5})
    return folder, {name: tensor.clone() for name, tensor in trained.state_dict().items()}


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in module.state_dict().items()}


# ------------------------------------------------------------------------------- preload

LAYER = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
NORM = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


def test_an_encoder_preloads_into_a_model_with_another_output_layer(experiment):
    folder, trained = experiment
    task = ds2_task(MORE_WORDS, rnn_layers=3)  # one more recurrent layer, 9 classes instead of 4
    fresh = snapshot(task)
    # The new third layer starts from the old second one (same shapes: hidden -> hidden).
    mapping = {f"model.recurrent_layers.2.{name}": f"model.recurrent_layers.1.{name}" for name in LAYER}
    mapping |= {f"model.recurrent_norms.1.{name}": f"model.recurrent_norms.0.{name}" for name in NORM}
    report = preload_from_files(task, [{"path": str(folder), "mapping": mapping, "ignore_params": ["model.head.*"]}])

    same_name = [name for name in trained if not name.startswith("model.head.")]
    assert report.loaded == {name: f"preload.0:{mapping.get(name, name)}" for name in task.state_dict()
                             if name in same_name or name in mapping}
    assert report.left_initialised == {"model.head.weight": "ignored (preload.0)", "model.head.bias": "ignored (preload.0)"}
    (source,) = report.sources
    assert source.path == folder / "checkpoints" / checkpoint_name(5)
    assert source.renamed == mapping
    assert source.unused == ["model.head.weight", "model.head.bias"]
    for name, weights in task.state_dict().items():
        expected = fresh[name] if name.startswith("model.head.") else trained[mapping.get(name, name)]
        assert torch.equal(weights, expected), name
    text = describe_report(report)
    assert f"preload.0 {source.path}: 34 loaded (9 renamed), 2 left as initialised, 2 source keys unused" in text
    assert "left as initialised: model.head.weight (ignored), model.head.bias (ignored)" in text


def test_a_shape_mismatch_is_an_error_unless_ignore_missing_and_then_it_is_reported(experiment):
    folder, trained = experiment
    task = ds2_task(MORE_WORDS)
    fresh = snapshot(task)
    with pytest.raises(ConfigError, match=r"preload\.0: 2 parameters cannot be loaded .*model\.head\.weight: shape \[9, 8\] "
                                          r"here, \[4, 8\] in the source's 'model\.head\.weight'.*ignore_missing"):
        preload_from_files(task, [{"path": str(folder)}])
    assert all(torch.equal(tensor, fresh[name]) for name, tensor in task.state_dict().items())  # nothing half-loaded

    report = preload_from_files(task, [{"path": str(folder), "ignore_missing": True}])
    assert report.left_initialised == {
        "model.head.weight": "shape [9, 8] here, [4, 8] in the source's 'model.head.weight' (preload.0)",
        "model.head.bias": "shape [9] here, [4] in the source's 'model.head.bias' (preload.0)",
    }
    assert len(report.loaded) == len(trained) - 2 and report.sources[0].unused == ["model.head.weight", "model.head.bias"]
    # A checkpoint's own tensors file is read as its (verified) checkpoint, with its names.
    checkpoint = report.sources[0].path
    again = preload_from_files(task, [{"path": str(checkpoint / "tensors.safetensors"), "ignore_missing": True}])
    assert again.sources[0].path == checkpoint and again.loaded == report.loaded


def test_prefix_selects_targets_and_strips_itself_to_find_the_source_key(tmp_path):
    file = tmp_path / "linear.safetensors"
    save_file({"weight": torch.full((2, 3), 2.0), "bias": torch.full((2,), 3.0), "other": torch.zeros(1)}, str(file))
    task = nn.ModuleDict({"encoder": nn.Linear(3, 2), "decoder": nn.Linear(2, 2)})
    decoder = snapshot(task.decoder)
    report = preload_from_files(task, [{"path": str(file), "prefix": "encoder."}])
    assert report.loaded == {"encoder.weight": "preload.0:weight", "encoder.bias": "preload.0:bias"}
    assert report.left_initialised == {"decoder.weight": "not selected", "decoder.bias": "not selected"}
    assert report.sources[0].unused == ["other"]
    assert torch.equal(task.encoder.weight, torch.full((2, 3), 2.0)) and torch.equal(task.encoder.bias, torch.full((2,), 3.0))
    assert all(torch.equal(tensor, decoder[name]) for name, tensor in task.decoder.state_dict().items())


def test_source_prefix_moves_one_part_of_a_model_into_another_place(tmp_path):
    # A pretrained encoder run holds model.*; a downstream model keeps it under model.encoder.*.
    file = tmp_path / "pretrained.safetensors"
    save_file({"model.weight": torch.full((2, 3), 2.0), "model.bias": torch.full((2,), 3.0), "workers.w": torch.zeros(1)}, str(file))
    task = nn.ModuleDict({"model": nn.ModuleDict({"encoder": nn.Linear(3, 2), "head": nn.Linear(2, 2)})})
    report = preload_from_files(task, [{"path": str(file), "prefix": "model.encoder.", "source_prefix": "model."}])
    assert report.loaded == {"model.encoder.weight": "preload.0:model.weight", "model.encoder.bias": "preload.0:model.bias"}
    assert report.sources[0].unused == ["workers.w"] and torch.equal(task.model.encoder.bias, torch.full((2,), 3.0))


def test_mapping_renames_even_outside_the_prefix_and_ignore_params_wins(tmp_path):
    file = tmp_path / "weights.safetensors"
    save_file({"w": torch.ones(2, 2), "b": torch.ones(2)}, str(file))
    task = nn.ModuleDict({"encoder": nn.Linear(2, 2), "decoder": nn.Linear(2, 2)})
    source = {"path": str(file), "prefix": "nothing.", "mapping": {"decoder.weight": "w", "decoder.bias": "b"}}
    report = preload_from_files(task, [source])
    assert report.loaded == {"decoder.weight": "preload.0:w", "decoder.bias": "preload.0:b"}
    report = preload_from_files(task, [{**source, "ignore_params": ["*.bias"]}])
    assert report.loaded == {"decoder.weight": "preload.0:w"} and report.left_initialised["decoder.bias"] == "ignored (preload.0)"
    with pytest.raises(ConfigError, match=r"preload\.0\.mapping: 'decoder\.weights' is not a parameter .*decoder\.weight"):
        preload_from_files(task, [{"path": str(file), "mapping": {"decoder.weights": "w"}}])
    with pytest.raises(ConfigError, match=r"preload\.0\.ignore_params\.0: 'head\.\*' matches no parameter"):
        preload_from_files(task, [{"path": str(file), "ignore_params": ["head.*"], "ignore_missing": True}])
    with pytest.raises(ConfigError, match=r"preload\.0\.ignore_mising: Extra inputs are not permitted"):
        preload_from_files(task, [{"path": str(file), "ignore_mising": True}])


def test_sources_apply_in_order_and_init_for_train_skips_when_not_training_from_scratch(tmp_path):
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    save_file({"weight": torch.ones(1, 1), "bias": torch.ones(1)}, str(first))
    save_file({"weight": torch.full((1, 1), 2.0)}, str(second))
    model = nn.Linear(1, 1)
    sources = [{"path": str(first)}, {"path": str(second), "ignore_missing": True, "init_for_train": False}]
    report = preload_from_files(model, sources)
    assert report.loaded == {"weight": "preload.1:weight", "bias": "preload.0:bias"}  # the later source wins
    assert (model.weight.item(), model.bias.item()) == (2.0, 1.0)

    model = nn.Linear(1, 1)
    bias = model.bias.item()
    report = preload_from_files(model, sources, training_from_scratch=False)  # a resume or an evaluation
    assert [source.applied for source in report.sources] == [False, True]
    assert (model.weight.item(), model.bias.item()) == (2.0, bias)
    assert f"preload.0 {first}: skipped (init_for_train" in describe_report(report)
    gone = [{"path": str(tmp_path / "deleted_since.safetensors")}]  # a skipped source is not read: resuming never needs it
    assert not preload_from_files(model, gone, training_from_scratch=False).loaded


class MakesAFile:
    """Unpickling this creates ``marker``: the proof that a file was (or was not) unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("name, protocol", [("model.pt", 4), ("model.ckpt", 2), ("model.bin", 5), ("model.safetensors", 4),
                                            ("model.safetensors", 0), ("weights", 3), ("zipped.safetensors", "torch.save")])
def test_a_pickled_file_is_refused_without_being_unpickled(tmp_path, name, protocol, monkeypatch):
    marker = tmp_path / "unpickled"
    payload = pickle.dumps({"weight": MakesAFile(marker)}, protocol=4)
    pickle.loads(payload)  # the payload is armed: loading it does create the marker
    assert marker.exists()
    marker.unlink()
    file = tmp_path / name
    if protocol == "torch.save":
        torch.save({"weight": MakesAFile(marker)}, file)  # a zip of pickles, as PyTorch writes by default
    else:
        file.write_bytes(pickle.dumps({"weight": MakesAFile(marker)}, protocol=protocol))
    for module, function in ((pickle, "load"), (pickle, "loads"), (torch, "load")):  # a second line of defence
        monkeypatch.setattr(module, function, lambda *args, **kwargs: pytest.fail("something was unpickled"))
    model = nn.Linear(1, 1)
    with pytest.raises(CheckpointError) as raised:
        preload_from_files(model, [{"path": str(file)}])
    assert not marker.exists()
    assert "torch.load(" in str(raised.value) and "weights_only=True" in str(raised.value)
    assert "safetensors.torch.save_file" in str(raised.value)


def test_a_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        preload_from_files(nn.Linear(1, 1), [{"path": str(tmp_path / "nowhere.safetensors")}])
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        preload_from_files(nn.Linear(1, 1), [{"path": str(tmp_path)}])


# ------------------------------------------------------------------------ initialization

def is_orthogonal(block: torch.Tensor) -> bool:
    """Rows orthonormal (a wide block) or columns orthonormal (a tall one)."""
    small = block @ block.T if block.shape[0] <= block.shape[1] else block.T @ block
    return torch.allclose(small, torch.eye(small.shape[0]), atol=1e-5)


@pytest.mark.parametrize("recurrent, gates", [(nn.LSTM, 4), (nn.GRU, 3)])
def test_orthogonal_applies_per_gate_block_of_recurrent_weights(recurrent, gates):
    model = nn.ModuleDict({"rnn": recurrent(5, 4, num_layers=2), "out": nn.Linear(4, 6)})
    torch.manual_seed(0)
    report = initialize_parameters(model, [{"params": "rnn.weight_*", "init": "orthogonal"},
                                           {"params": "out.weight", "init": "orthogonal"}])
    assert report["rnn.weight_hh_l1"] == f"initialization.0: orthogonal per gate ({gates} blocks)"
    assert report["out.weight"] == "initialization.1: orthogonal"
    for name in ("weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1"):
        weight = getattr(model.rnn, name)
        assert all(is_orthogonal(block) for block in weight.chunk(gates)), name
        assert not is_orthogonal(weight)  # the stacked matrix as a whole is not: the blocks are independent
    assert is_orthogonal(model.out.weight)
    first = model.rnn.weight_hh_l0.detach().clone()
    torch.manual_seed(0)
    initialize_parameters(model, [{"params": "rnn.weight_*", "init": "orthogonal"}])
    assert torch.equal(model.rnn.weight_hh_l0, first)  # the run's seed decides


def test_forget_gate_bias_sets_the_forget_slice_of_lstm_biases_only():
    model = nn.ModuleDict({"lstm": nn.LSTM(3, 2, num_layers=2, bidirectional=True), "gru": nn.GRU(3, 2)})
    report = initialize_parameters(model, [{"params": "*lstm*bias*", "init": "forget_gate_bias", "value": 1.5}])
    assert len(report) == 8  # 2 layers x 2 directions x (bias_ih, bias_hh)
    for name in ("bias_ih_l0", "bias_ih_l1_reverse"):
        assert getattr(model.lstm, name).tolist() == [0.0, 0.0, 1.5, 1.5, 0.0, 0.0, 0.0, 0.0]  # gates i, f, g, o
    for name in ("bias_hh_l0", "bias_hh_l1_reverse"):
        assert getattr(model.lstm, name).tolist() == [0.0] * 8  # the LSTM adds both: the forget gate sees 1.5
    with pytest.raises(ConfigError, match=r"initialization\.0\.params: forget_gate_bias .* 'gru\.bias_ih_l0' is a parameter "
                                          r"of GRU \(gates r, z, n: no forget gate\)"):
        initialize_parameters(model, [{"params": "*bias_ih*", "init": "forget_gate_bias"}])
    with pytest.raises(ConfigError, match=r"'lstm\.weight_ih_l0' is a parameter of LSTM"):
        initialize_parameters(model, [{"params": "lstm.*", "init": "forget_gate_bias"}])


def test_the_first_matching_rule_wins_and_the_rest_keep_their_own_init():
    model = DeepSpeech2(5, n_mels=16, conv_channels=4, rnn_hidden=8, rnn_type="lstm")
    untouched = model.convolutions[0].weight.detach().clone()
    report = initialize_parameters(model, [
        {"params": "recurrent_layers.*weight_hh*", "init": "orthogonal"},
        {"params": "recurrent_layers.*bias*", "init": "forget_gate_bias", "value": 1.0},
        {"params": "*.bias", "init": "constant", "value": 0.25},
        {"params": "*weight*", "init": "normal", "std": 0.01},
    ])
    assert report["recurrent_layers.1.weight_hh_l0_reverse"] == "initialization.0: orthogonal per gate (4 blocks)"
    assert report["head.bias"] == "initialization.2: constant 0.25"
    assert report["recurrent_layers.0.weight_ih_l0"] == "initialization.3: normal (mean 0.0, std 0.01)"
    assert model.head.bias.tolist() == [0.25] * 5
    assert model.recurrent_layers[0].bias_ih_l0[8:16].tolist() == [1.0] * 8
    assert set(report) == {name for name, _ in model.named_parameters()}  # every one taken, by its first match
    assert 0.005 < model.head.weight.std().item() < 0.02 and not torch.equal(model.convolutions[0].weight, untouched)


def test_a_rule_that_takes_nothing_is_an_error_and_nothing_changes():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    before = snapshot(model)
    with pytest.raises(ConfigError, match=r"initialization\.1\.params: '\*lstm\*' matches no parameter; names look like: "
                                          r"0\.weight, 0\.bias, 1\.weight, 1\.bias"):
        initialize_parameters(model, [{"params": "*.weight", "init": "xavier_uniform"}, {"params": "*lstm*", "init": "orthogonal"}])
    with pytest.raises(ConfigError, match=r"initialization\.1\.params: every parameter '0\.\*' matches was taken by an "
                                          r"earlier rule \(initialization\.0"):
        initialize_parameters(model, [{"params": "*", "init": "uniform", "a": -1, "b": 1}, {"params": "0.*", "init": "constant", "value": 0}])
    with pytest.raises(ConfigError, match=r"initialization\.0\.params: kaiming_normal needs a weight of at least 2 dimensions, "
                                          r"but '0\.bias' has shape \[4\]"):
        initialize_parameters(model, [{"params": "*", "init": "kaiming_normal"}])
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())


@pytest.mark.parametrize("rule, problem", [
    ({"params": "*", "init": "normal"}, r"initialization\.0\.std: Field required"),
    ({"params": "*", "init": "normal", "std": 0.1, "gain": 2}, r"initialization\.0\.gain: Extra inputs are not permitted"),
    ({"params": "*", "init": "constant", "value": float("nan")}, r"initialization\.0\.value: Input should be a finite number"),
    ({"params": "*", "init": "uniform", "a": 1, "b": 0}, r"initialization\.0: Value error, uniform needs a < b"),
    ({"params": "*", "init": "glorot"}, r"initialization\.0: Input tag 'glorot' found using 'init' does not match"),
    ({"params": "", "init": "orthogonal"}, r"initialization\.0\.params: String should have at least 1 character"),
])
def test_a_malformed_rule_names_its_key(rule, problem):
    with pytest.raises(ConfigError, match=problem):
        initialize_parameters(nn.Linear(2, 2), [rule])


# ------------------------------------------------------------------------------- freezing

def test_frozen_parameters_do_not_train_and_are_counted():
    model = nn.ModuleDict({"encoder": nn.Linear(3, 4), "head": nn.Linear(4, 2)})
    counts = freeze_parameters(model, ["encoder.*"])
    assert (counts.trainable, counts.frozen) == (4 * 2 + 2, 3 * 4 + 4)
    assert str(counts) == "10 trainable parameters, 16 frozen"
    frozen = model.encoder.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    model.head(model.encoder(torch.randn(5, 3))).square().sum().backward()
    optimizer.step()
    assert torch.equal(model.encoder.weight, frozen) and model.encoder.weight.grad is None
    with pytest.raises(ConfigError, match=r"freeze\.1: 'decoder\.\*' matches no parameter; names look like: .*head\.weight"):
        freeze_parameters(model, ["head.bias", "decoder.*"])
    assert model.head.bias.requires_grad  # nothing frozen by a failed call
