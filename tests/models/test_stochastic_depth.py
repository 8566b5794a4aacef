"""Stochastic depth in TDS (residual blocks) and Deep Speech 2 (recurrent layers).

The references below are the forwards as they were before stochastic depth, written with the
models' own submodules: with ``stochastic_depth`` 0 (and in evaluation, whatever its value) a
model must compute exactly that, drawing no extra random number.
"""

from __future__ import annotations

from types import SimpleNamespace

import pydantic
import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cadence import ClassificationTask, Trainer
from cadence.checkpoint.retention import CheckpointPolicy
from cadence.errors import ConfigError
from cadence.experiment import Experiment
from cadence.models.deepspeech2 import DeepSpeech2, strided_lengths
from cadence.models.masking import valid_frames
from cadence.models.tds import TDSBlock, TDSEncoder, TDSSeq2Seq, halve_lengths
from cadence.optim.scheduled_values import ScheduledSettings
from cadence.registry import schema_from_signature

TDS = dict(num_classes=6, n_mels=8, channels=2, channel_growth=1, kernel_size=5, key_value_size=12)
DS2 = dict(num_classes=6, n_mels=20, conv_channels=4, frequency_kernel=5, time_kernel=5, rnn_hidden=16)


# ---------------------------------------------------------------------------- references
def reference_block(block: TDSBlock, hidden: torch.Tensor, mask: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    batch, frames, size = hidden.shape
    view = (hidden * mask).view(batch, frames, block.channels, block.width).permute(0, 2, 3, 1)
    convolved = block.dropout(F.relu(block.convolution(view))).permute(0, 3, 1, 2).reshape(batch, frames, size)
    hidden = block.convolution_norm(hidden + (convolved if scale == 1.0 else convolved * scale))
    branch = block.fully_connected(hidden)
    return block.fully_connected_norm(hidden + (branch if scale == 1.0 else branch * scale))


def reference_encoder(encoder: TDSEncoder, features: torch.Tensor, lengths: torch.Tensor, scales=None) -> torch.Tensor:
    """TDSEncoder's memory; ``scales``: per block, None (skipped) or its residual scale (default: all 1)."""
    scales = iter(scales) if scales is not None else None
    batch, frames = features.shape[0], features.shape[-1]
    hidden = features.transpose(1, 2)
    for subsampling, norm, blocks in zip(encoder.subsampling, encoder.subsampling_norms, encoder.groups):
        mask = valid_frames(lengths, frames).transpose(1, 2)
        view = (hidden * mask).view(batch, frames, subsampling.in_channels, encoder.width).permute(0, 2, 3, 1)
        convolved = encoder.dropout(F.relu(subsampling(view)))
        lengths, frames = halve_lengths(lengths), convolved.shape[-1]
        hidden = norm(convolved.permute(0, 3, 1, 2).reshape(batch, frames, -1))
        mask = valid_frames(lengths, frames).transpose(1, 2)
        for block in blocks:
            scale = next(scales) if scales is not None else 1.0
            if scale is not None:
                hidden = reference_block(block, hidden, mask, scale)
    return encoder.output(hidden)


def reference_deepspeech2(model: DeepSpeech2, features: torch.Tensor, lengths: torch.Tensor, skipped=()) -> torch.Tensor:
    """DeepSpeech2's logits, with the recurrent layers in ``skipped`` passed by."""
    hidden = features.unsqueeze(1)
    for convolution, norm, stride in zip(model.convolutions, model.conv_norms, model.time_strides):
        hidden = convolution(hidden * valid_frames(lengths, hidden.shape[-1]).unsqueeze(1))
        lengths = strided_lengths(lengths, stride)
        hidden = model.conv_dropout(model.activation(norm(hidden, valid_frames(lengths, hidden.shape[-1]).unsqueeze(1))))
    batch, channels, bins, frames = hidden.shape
    hidden = hidden.reshape(batch, channels * bins, frames)
    mask = valid_frames(lengths, frames)
    for layer, recurrent in enumerate(model.recurrent_layers):
        if layer in skipped:
            continue
        if layer > 0:
            hidden = model.dropout(model.recurrent_norms[layer - 1](hidden, mask))
        packed = pack_padded_sequence(hidden.transpose(1, 2), lengths, batch_first=True, enforce_sorted=False)
        output, _ = pad_packed_sequence(recurrent(packed)[0], batch_first=True, total_length=frames)
        if model.bidirectional:
            output = output.view(batch, frames, 2, -1).sum(2)
        hidden = output.transpose(1, 2)
    if model.lookahead is not None:
        hidden = model.activation(model.lookahead(F.pad(hidden * mask, (0, model.lookahead.kernel_size[0] - 1))))
    return model.head(model.dropout(hidden.transpose(1, 2)))


def tds_inputs():
    return torch.randn(3, 8, 29), torch.tensor([29, 17, 6]), torch.randint(0, 6, (3, 4))


def ds2_inputs():
    return torch.randn(3, 20, 31), torch.tensor([31, 18, 7])


def same_forward_and_draws(run_model, run_reference, seed: int = 5) -> bool:
    """Both in one random state: equal outputs and the same random numbers drawn."""
    torch.manual_seed(seed)
    output = run_model()
    after_model = torch.get_rng_state()
    torch.manual_seed(seed)
    expected = run_reference()
    return torch.equal(output, expected) and torch.equal(after_model, torch.get_rng_state())


# ---------------------------------------------------------------------------- TDS
def test_tds_with_zero_stochastic_depth_is_the_forward_it_was():
    torch.manual_seed(0)
    model = TDSSeq2Seq(**TDS, groups=2, blocks_per_group=2, dropout=0.2).train()  # dropout draws too
    assert model.stochastic_depth == 0.0  # the default
    features, lengths, _ = tds_inputs()
    assert same_forward_and_draws(lambda: model.encode(features, lengths)[0], lambda: reference_encoder(model.encoder, features, lengths))


def test_tds_in_evaluation_runs_every_block_unscaled_and_draws_nothing():
    torch.manual_seed(0)
    model = TDSSeq2Seq(**TDS, groups=2, blocks_per_group=2, dropout=0.2, stochastic_depth=0.9).eval()
    features, lengths, _ = tds_inputs()
    assert same_forward_and_draws(lambda: model.encode(features, lengths)[0], lambda: reference_encoder(model.encoder, features, lengths))


@pytest.mark.parametrize("seed", range(6))
def test_tds_drops_each_block_with_a_linearly_rising_probability_and_scales_the_kept_ones(seed):
    torch.manual_seed(0)
    model = TDSSeq2Seq(**TDS, groups=2, blocks_per_group=2, dropout=0.0, stochastic_depth=0.6).train()
    features, lengths, _ = tds_inputs()
    probabilities = [0.6 * block / 4 for block in (1, 2, 3, 4)]  # 0.15, 0.3, 0.45, 0.6: linear in depth
    torch.manual_seed(seed)
    draws = torch.rand(4).tolist()  # what the forward draws first, from the global generator
    scales = [None if draw < p else 1 / (1 - p) for draw, p in zip(draws, probabilities)]
    torch.manual_seed(seed)
    memory = model.encode(features, lengths)[0]
    torch.testing.assert_close(memory, reference_encoder(model.encoder, features, lengths, scales), rtol=0, atol=1e-6)


def test_tds_with_probability_one_skips_the_last_block_exactly():
    torch.manual_seed(0)
    model = TDSSeq2Seq(**TDS, groups=1, blocks_per_group=1, dropout=0.0, stochastic_depth=1.0).train()
    calls = []
    model.encoder.groups[0][0].register_forward_hook(lambda *arguments: calls.append(1))
    features, lengths, _ = tds_inputs()
    for _ in range(10):
        assert torch.equal(model.encode(features, lengths)[0], reference_encoder(model.encoder, features, lengths, [None]))
    assert calls == []  # the block never ran: its input passed through


def test_tds_honours_a_value_set_during_training():
    torch.manual_seed(0)
    model = TDSSeq2Seq(**TDS, groups=1, blocks_per_group=1, dropout=0.0).train()
    features, lengths, previous = tds_inputs()
    calls = []
    model.encoder.groups[0][0].register_forward_hook(lambda *arguments: calls.append(1))
    model(features, lengths, previous)
    assert len(calls) == 1
    model.stochastic_depth = 1.0  # what `schedules: {model.stochastic_depth: ...}` does, by setattr
    model(features, lengths, previous)
    assert len(calls) == 1 and model.encoder.stochastic_depth == 1.0
    model.stochastic_depth = 0.0
    model(features, lengths, previous)
    assert len(calls) == 2
    with pytest.raises(ValueError, match="stochastic_depth"):
        model.stochastic_depth = 1.5


def test_a_schedule_reaches_stochastic_depth_and_is_checked():
    torch.manual_seed(0)
    model = TDSSeq2Seq(**TDS, groups=1, blocks_per_group=2)
    trainer = SimpleNamespace(task=SimpleNamespace(model=model), callbacks=[])
    settings = ScheduledSettings({"model.stochastic_depth": {"epochs": {1: 0.0, 3: 0.2}}})
    settings.bind(trainer)
    settings.apply(step=0, epoch=0, epoch_start=True)
    assert model.encoder.stochastic_depth == 0.0
    settings.apply(step=10, epoch=2, epoch_start=True)
    assert model.encoder.stochastic_depth == 0.2
    wrong = ScheduledSettings({"model.stochastic_depth": {"epochs": {1: 2.0}}})
    wrong.bind(trainer)
    with pytest.raises(ConfigError, match="schedules.model.stochastic_depth"):
        wrong.apply(step=0, epoch=0, epoch_start=True)


# ---------------------------------------------------------------------------- Deep Speech 2
@pytest.mark.parametrize("options", [dict(rnn_layers=3), dict(rnn_layers=2, rnn_type="lstm", bidirectional=False, lookahead=2)])
def test_deepspeech2_with_zero_stochastic_depth_is_the_forward_it_was(options):
    torch.manual_seed(0)
    model = DeepSpeech2(**DS2, **options, dropout=0.2).train()
    assert model.stochastic_depth == 0.0
    features, lengths = ds2_inputs()
    assert same_forward_and_draws(lambda: model(features, lengths)[0], lambda: reference_deepspeech2(model, features, lengths))


def test_deepspeech2_in_evaluation_runs_every_layer_and_draws_nothing():
    torch.manual_seed(0)
    model = DeepSpeech2(**DS2, rnn_layers=3, dropout=0.2, stochastic_depth=1.0).eval()
    features, lengths = ds2_inputs()
    assert same_forward_and_draws(lambda: model(features, lengths)[0], lambda: reference_deepspeech2(model, features, lengths))


def test_deepspeech2_skips_only_layers_whose_input_has_their_output_size():
    assert DeepSpeech2(**DS2, rnn_layers=3).skippable_layers == (1, 2)  # the first takes 4 x 5 = 20 features, not 16
    assert DeepSpeech2(**{**DS2, "rnn_hidden": 20}, rnn_layers=2).skippable_layers == (0, 1)  # 20 in, 20 out
    assert DeepSpeech2(**{**DS2, "rnn_hidden": 20}, rnn_layers=1, stochastic_depth=0.5).skippable_layers == (0,)


@pytest.mark.parametrize("seed", range(6))
def test_deepspeech2_drops_layers_with_a_linearly_rising_probability(seed):
    torch.manual_seed(0)
    model = DeepSpeech2(**DS2, rnn_layers=4, dropout=0.0, stochastic_depth=0.8).train()
    features, lengths = ds2_inputs()
    torch.manual_seed(seed)
    draws = torch.rand(3).tolist()  # one per skippable layer: 1, 2, 3 of 0..3
    skipped = {layer for layer, draw in zip((1, 2, 3), draws) if draw < 0.8 * (layer + 1) / 4}
    torch.manual_seed(seed)
    logits = model(features, lengths)[0]
    torch.testing.assert_close(logits, reference_deepspeech2(model, features, lengths, skipped), rtol=0, atol=1e-6)


def test_deepspeech2_with_probability_one_skips_the_last_layer_exactly():
    torch.manual_seed(0)
    model = DeepSpeech2(**DS2, rnn_layers=2, dropout=0.0, stochastic_depth=1.0).train()
    calls = []
    model.recurrent_layers[1].register_forward_hook(lambda *arguments: calls.append(1))
    features, lengths = ds2_inputs()
    for _ in range(5):
        torch.testing.assert_close(model(features, lengths)[0], reference_deepspeech2(model, features, lengths, {1}), rtol=0, atol=0)
    assert calls == []
    model.stochastic_depth = 0.0  # set during training: honoured at the next forward
    model(features, lengths)
    assert calls == [1]


def test_deepspeech2_without_a_skippable_layer_refuses_stochastic_depth():
    with pytest.raises(ValueError, match="stochastic_depth.*takes 20 features.*rnn_hidden=16"):
        DeepSpeech2(**DS2, rnn_layers=1, stochastic_depth=0.1)
    model = DeepSpeech2(**DS2, rnn_layers=1)  # 0 is fine
    assert model.skippable_layers == ()
    with pytest.raises(ValueError, match="stochastic_depth"):
        model.stochastic_depth = 0.2  # a schedule is refused too
    model.stochastic_depth = 0.0


# ---------------------------------------------------------------------------- recipes and resume
@pytest.mark.parametrize("model", [TDSSeq2Seq, DeepSpeech2])
def test_stochastic_depth_is_a_checked_recipe_key(model):
    schema = schema_from_signature(model, exclude={"num_classes"})
    assert schema().stochastic_depth == 0.0 and schema(stochastic_depth=1.0).stochastic_depth == 1.0
    for wrong in (-0.1, 1.5, True):
        with pytest.raises(pydantic.ValidationError):
            schema(stochastic_depth=wrong)


class Utterances(nn.Module):
    """Deep Speech 2 as an utterance classifier (logits averaged over frames), for ClassificationTask."""

    def __init__(self):
        super().__init__()
        self.network = DeepSpeech2(**DS2, rnn_layers=3, dropout=0.1, stochastic_depth=0.5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        lengths = torch.full((features.shape[0],), features.shape[-1])
        return self.network(features, lengths)[0].mean(1)


def test_a_stopped_run_with_stochastic_depth_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    generator = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, 20, 16, generator=generator), torch.randint(0, 6, (4,), generator=generator)) for _ in range(4)]
    policy = CheckpointPolicy(every_steps=1, keep_last=10)

    def run(folder: str, seed: int = 0, resume: bool = False, **options) -> Trainer:
        torch.manual_seed(seed)
        task = ClassificationTask(Utterances())
        with Experiment(tmp_path / folder, tensorboard=False) as experiment:
            trainer = Trainer(task, torch.optim.SGD(task.parameters(), lr=0.1), max_epochs=2, progress_bar=False,
                              experiment=experiment, checkpoint_policy=policy, **options)
            trainer.fit(data, resume_from=tmp_path / folder if resume else None)
        return trainer

    whole = run("whole")
    run("halves", max_steps=5)  # stops inside the second epoch
    resumed = run("halves", seed=0, resume=True)
    assert resumed.state.global_step == whole.state.global_step == 8
    for name, value in whole.task.state_dict().items():
        assert torch.equal(value, resumed.task.state_dict()[name]), name


def test_under_ddp_a_dropped_layer_gets_a_zero_gradient_so_every_process_agrees():
    """DDP expects a gradient for every parameter at every update; a dropped layer's is exactly 0."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # in-process: no port to wait on
    try:
        torch.manual_seed(0)
        model = DeepSpeech2(num_classes=5, conv_channels=4, rnn_layers=2, rnn_hidden=16, stochastic_depth=1.0)  # the last layer always drops
        wrapped = DistributedDataParallel(model)
        for _ in range(2):
            model.zero_grad()
            logits, _ = wrapped(torch.randn(2, 40, 30), torch.tensor([30, 20]))
            logits.sum().backward()
            dropped = [model.recurrent_layers[1].weight_hh_l0.grad, model.recurrent_norms[0].weight.grad]
            assert all(gradient is not None and not gradient.any() for gradient in dropped)
            assert model.recurrent_layers[0].weight_hh_l0.grad.any()
    finally:
        dist.destroy_process_group()
