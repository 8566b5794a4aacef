"""The PASE+ encoder and its layers: frame rates, padding invariance, the QRNN's recurrence, SincConv's bands."""

from __future__ import annotations

import math

import pytest
import torch

from cadence.errors import ConfigError
from cadence.models.pase import PASEEncoder
from cadence.models.qrnn import QRNN, reverse_valid_frames
from cadence.models.sinc_conv import SincConv

SMALL = {"sinc_filters": 8, "sinc_kernel": 51, "channels": [8, 8, 8, 8, 8, 8, 8], "rnn_hidden": 8, "output_size": 12}


@pytest.mark.parametrize(("sample_rate", "frame_shift_s"), [(16000, 0.01), (8000, 0.02)])
def test_the_paper_configuration_gives_one_256_dimensional_frame_per_160_samples(sample_rate, frame_shift_s) -> None:
    encoder = PASEEncoder(sample_rate=sample_rate).eval()
    assert encoder.stride == 160 and encoder.frame_shift_s == frame_shift_s
    assert encoder.sinc.filters == 64 and encoder.sinc.kernel_size == 251
    frames, lengths = encoder(torch.randn(2, sample_rate), torch.tensor([sample_rate, sample_rate // 2 + 100]))
    assert frames.shape == (2, 256, sample_rate // 160)  # one second: 100 frames at 16 kHz, 50 at 8 kHz
    assert lengths.tolist() == [sample_rate // 160, (sample_rate // 2 + 100) // 160]
    assert frames[1, :, lengths[1]:].eq(0).all()


@pytest.mark.parametrize("rnn", ["qrnn", "gru", "none"])
def test_an_utterance_gives_the_same_frames_alone_or_in_a_padded_batch(rnn) -> None:
    torch.manual_seed(0)
    encoder = PASEEncoder(sample_rate=8000, rnn=rnn, **SMALL)
    encoder.train()
    for _ in range(3):  # running statistics away from their initial values
        encoder(torch.randn(3, 4000), torch.tensor([4000, 2500, 1000]))
    encoder.eval()
    lengths = torch.tensor([4000, 2519, 161, 100])  # 25, 15, 1 and 0 frames
    batch = torch.randn(4, 4000)
    frames, frame_lengths = encoder(batch, lengths)
    assert frame_lengths.tolist() == [25, 15, 1, 0]
    for row, length in enumerate(lengths.tolist()[:3]):
        alone, _ = encoder(batch[row : row + 1, :length], lengths[row : row + 1])
        assert torch.allclose(frames[row, :, : frame_lengths[row]], alone[0], atol=1e-5), row
    assert frames[3].eq(0).all()


def test_training_statistics_skip_padding_and_the_output_is_normalized() -> None:
    torch.manual_seed(1)
    encoder = PASEEncoder(sample_rate=8000, **SMALL).train()
    lengths = torch.tensor([4000, 1600])
    batch = torch.randn(2, 4000)
    batch[1, 1600:] = 1000.0  # padding with huge values: it must not reach any statistic or frame
    frames, frame_lengths = encoder(batch, lengths)
    valid = torch.cat([frames[0, :, :25], frames[1, :, :10]], dim=1)  # [12, 35]
    assert torch.allclose(valid.mean(1), torch.zeros(12), atol=1e-5)
    assert torch.allclose(valid.var(1, unbiased=False), torch.ones(12), atol=1e-3)
    clean = batch.clone()
    clean[1, 1600:] = 0.0
    assert torch.allclose(encoder(clean, lengths)[0], frames, atol=1e-5)


def test_a_qrnn_direction_is_the_fo_pooling_recurrence() -> None:
    """c_t = f_t c_{t-1} + (1 - f_t) z_t, h_t = o_t c_t, with gates from the current and previous frame (window 2)."""
    torch.manual_seed(2)
    layer = QRNN(3, 4, window=2, bidirectional=False)
    inputs = torch.randn(1, 3, 6)
    weight, bias = layer.gates[0].weight, layer.gates[0].bias  # [12, 3, 2], [12]
    cell, expected = torch.zeros(4), []
    for t in range(6):
        previous = inputs[0, :, t - 1] if t > 0 else torch.zeros(3)
        gates = weight[:, :, 0] @ previous + weight[:, :, 1] @ inputs[0, :, t] + bias
        z, f, o = torch.tanh(gates[:4]), torch.sigmoid(gates[4:8]), torch.sigmoid(gates[8:])
        cell = f * cell + (1 - f) * z
        expected.append(o * cell)
    assert torch.allclose(layer(inputs, torch.tensor([6]))[0], torch.stack(expected, dim=1), atol=1e-6)


def test_the_backward_qrnn_direction_reads_each_utterance_from_its_own_end() -> None:
    torch.manual_seed(3)
    layer = QRNN(3, 4, bidirectional=True)
    inputs, lengths = torch.randn(2, 3, 7), torch.tensor([7, 4])
    outputs = layer(inputs, lengths)  # [2, 8, 7]
    for row, length in enumerate(lengths.tolist()):
        utterance = inputs[row : row + 1, :, :length]
        backwards = layer.direction(layer.gates[1], utterance.flip(-1)).flip(-1)
        assert torch.allclose(outputs[row, 4:, :length], backwards[0], atol=1e-6)
    assert outputs[1, :, 4:].eq(0).all()
    values = torch.arange(10.0).view(1, 2, 5)
    assert torch.equal(reverse_valid_frames(reverse_valid_frames(values, torch.tensor([3])), torch.tensor([3])), values)


def test_each_sinc_filter_passes_its_band_and_stops_the_rest() -> None:
    bank = SincConv(filters=6, kernel_size=251, sample_rate=8000)
    with torch.no_grad():
        low, high = bank.cutoffs()
        response = torch.fft.rfft(bank.kernels()[:, 0], n=8000).abs()  # [6, 4001]: 1 Hz bins
    for band in range(6):
        centre, width = int((low[band] + high[band]) / 2), float(high[band] - low[band])
        assert response[band, centre] == pytest.approx(1.0, abs=0.05)
        far = [hz for hz in (int(low[band] - width), int(high[band] + width)) if 0 < hz <= 4000]
        for hz in far:
            assert response[band, hz] < 0.05, (band, hz)


def test_sinc_cutoffs_learn_and_stay_in_their_bounds() -> None:
    bank = SincConv(filters=4, kernel_size=51, sample_rate=8000, min_low_hz=50, min_band_hz=50)
    bank(torch.randn(1, 1, 400)).pow(2).sum().backward()
    assert bank.low_hz.grad.abs().sum() > 0 and bank.band_hz.grad.abs().sum() > 0
    with torch.no_grad():
        bank.low_hz.fill_(-10_000.0)
        bank.band_hz.fill_(0.0)
    low, high = bank.cutoffs()
    assert (low >= 50).all() and (high <= 4000).all() and ((high - low) >= 50 - 1e-3).all()


def test_mistakes_are_named() -> None:
    with pytest.raises(ConfigError, match="one entry per conv block"):
        PASEEncoder(kernels=[20, 11], strides=[10, 2, 1], channels=[8, 8])
    with pytest.raises(ConfigError, match=r"model.kernels\[1\] = 1 is shorter than model.strides\[1\] = 2"):
        PASEEncoder(kernels=[20, 1], strides=[10, 2], channels=[8, 8])
    with pytest.raises(ConfigError, match="takes waveforms"):
        PASEEncoder(**SMALL)(torch.randn(2, 40, 100), torch.tensor([100, 100]))
    with pytest.raises(ValueError, match="Nyquist"):
        SincConv(sample_rate=100, min_low_hz=40, min_band_hz=20)
    assert math.prod(PASEEncoder(**SMALL).strides) == 160


@pytest.mark.parametrize("mode", ["frozen", "fine-tuned", "pretrained norms"])
def test_a_downstream_classifier_freezes_or_fine_tunes_its_encoder(mode) -> None:
    from cadence.models.encoder_classifier import EncoderClassifier

    torch.manual_seed(4)
    model = EncoderClassifier(num_classes=3, encoder={"name": "pase_encoder", **SMALL}, hidden=8,
                              freeze_encoder=mode == "frozen", pretrained_norms=mode == "pretrained norms")
    before = {name: tensor.clone() for name, tensor in model.encoder.state_dict().items()}
    head_before = model.head[0].weight.clone()
    optimizer = torch.optim.SGD([parameter for parameter in model.parameters() if parameter.requires_grad], lr=0.1)
    model.train()
    loss = nn_functional_cross_entropy(model(torch.randn(4, 3200), torch.tensor([3200, 3000, 2000, 1000])), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    optimizer.step()
    changed = [name for name, tensor in model.encoder.state_dict().items() if not torch.equal(tensor, before[name])]
    statistics = [name for name in changed if "running_" in name or "num_batches_tracked" in name]
    assert not torch.equal(model.head[0].weight, head_before)
    if mode == "frozen":
        assert changed == []  # weights and batch-norm statistics as pretrained
    elif mode == "pretrained norms":
        assert "convolutions.0.weight" in changed and "norms.1.weight" in changed and statistics == []
    else:
        assert "convolutions.0.weight" in changed and "norms.1.running_mean" in changed


def test_a_frozen_encoder_refuses_pretrained_norms() -> None:
    from cadence.models.encoder_classifier import EncoderClassifier

    with pytest.raises(ConfigError, match="pretrained_norms is for fine-tuning"):
        EncoderClassifier(num_classes=3, encoder={"name": "pase_encoder", **SMALL}, freeze_encoder=True, pretrained_norms=True)


def test_a_downstream_classifier_pools_valid_frames_only() -> None:
    from cadence.models.encoder_classifier import EncoderClassifier

    torch.manual_seed(5)
    model = EncoderClassifier(num_classes=3, encoder={"name": "pase_encoder", **SMALL}, hidden=8).eval()
    batch, lengths = torch.randn(2, 3200), torch.tensor([3200, 1900])
    logits = model(batch, lengths)
    alone = model(batch[1:, :1900], lengths[1:])
    assert torch.allclose(logits[1], alone[0], atol=1e-5)


def nn_functional_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits, targets)
