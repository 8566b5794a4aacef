from __future__ import annotations

import copy

import pydantic
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cadence.models.deepspeech2 import DeepSpeech2
from cadence.optim.scheduled_values import dropout_setting
from cadence.registry import schema_from_signature
from random_draws import same_forward_and_draws

TINY = dict(conv_channels=4, frequency_kernel=5, time_kernel=5, rnn_hidden=16, dropout=0.0)


@pytest.mark.parametrize("time_stride", [1, 2, 3, 4])
def test_output_shapes_and_lengths_follow_the_time_stride(time_stride):
    torch.manual_seed(0)
    model = DeepSpeech2(num_classes=7, n_mels=20, time_stride=time_stride, **TINY)
    for frames in (1, 9, 10, 37):
        lengths = torch.tensor([frames, max(1, frames // 2), 1])
        logits, output_lengths = model(torch.randn(3, 20, frames), lengths)
        expected = -(-lengths // time_stride)  # ceil division
        assert logits.shape == (3, -(-frames // time_stride), 7)
        assert output_lengths.tolist() == expected.tolist() == model.output_lengths(lengths).tolist()


def warmed_up(model: DeepSpeech2) -> DeepSpeech2:
    """A few training-mode passes give the batch norms non-trivial running statistics, then eval."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 20, 30) * 2 + 1, torch.tensor([30, 21, 12, 25]))
    return model.eval()


@pytest.mark.parametrize(
    "options",
    [
        dict(rnn_type="gru", bidirectional=True),
        dict(rnn_type="lstm", bidirectional=True, activation="relu", rnn_layers=3),
        dict(rnn_type="gru", bidirectional=False, lookahead=2, time_stride=4),
        dict(rnn_type="lstm", bidirectional=False, lookahead=3, conv_layers=3, time_stride=3),
    ],
)
def test_an_utterance_alone_equals_it_inside_a_padded_batch(options):
    torch.manual_seed(0)
    model = warmed_up(DeepSpeech2(num_classes=6, n_mels=20, **{**TINY, **options}))
    short = torch.randn(1, 20, 13)
    padded = torch.cat([torch.cat([short, torch.full((1, 20, 18), 7.0)], dim=2), torch.randn(1, 20, 31)])
    alone, alone_lengths = model(short, torch.tensor([13]))
    batched, batched_lengths = model(padded, torch.tensor([13, 31]))
    frames = alone_lengths.item()
    assert batched_lengths[0].item() == frames == alone.shape[1]
    assert torch.allclose(alone[0], batched[0, :frames], atol=1e-5)


def test_training_statistics_ignore_padding():
    torch.manual_seed(0)
    model = DeepSpeech2(num_classes=5, n_mels=20, rnn_layers=3, **TINY).train()
    features, lengths = torch.randn(2, 20, 16), torch.tensor([16, 11])
    garbage = torch.cat([features, torch.randn(2, 20, 6) * 100], dim=2)
    garbage[1, :, 11:] = 50.0
    clean = features.clone()
    clean[1, :, 11:] = 0.0
    logits_clean, _ = model(clean, lengths)
    logits_garbage, _ = model(garbage, lengths)
    assert torch.allclose(logits_clean[0], logits_garbage[0, :8], atol=1e-5)
    assert torch.allclose(logits_clean[1, :6], logits_garbage[1, :6], atol=1e-5)


def first_changed_frame(model: DeepSpeech2, from_frame: int) -> int:
    """The first output frame that changes when the input changes from ``from_frame`` on."""
    torch.manual_seed(1)
    features, lengths = torch.randn(1, 20, 60), torch.tensor([60])
    changed = features.clone()
    changed[:, :, from_frame:] += 3.0
    before, _ = model(features, lengths)
    after, _ = model(changed, lengths)
    differs = (before - after).abs().amax(dim=2)[0] > 1e-6  # [T']
    return int(differs.nonzero()[0])


def test_lookahead_sees_exactly_that_many_future_frames():
    torch.manual_seed(0)
    causal = DeepSpeech2(num_classes=5, n_mels=20, bidirectional=False, **TINY).eval()
    torch.manual_seed(0)
    lookahead = DeepSpeech2(num_classes=5, n_mels=20, bidirectional=False, lookahead=3, **TINY).eval()
    without = first_changed_frame(causal, from_frame=40)
    assert 0 < without < 30  # unidirectional: earlier outputs never see the change
    assert first_changed_frame(lookahead, from_frame=40) == without - 3


def test_lookahead_is_rejected_for_bidirectional_models():
    with pytest.raises(ValueError, match="lookahead"):
        DeepSpeech2(num_classes=5, bidirectional=True, lookahead=2)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_ctc_loss_falls_on_a_tiny_batch(rnn_type):
    torch.manual_seed(0)
    model = DeepSpeech2(num_classes=5, n_mels=20, rnn_type=rnn_type, **TINY)
    features, lengths = torch.randn(4, 20, 40), torch.tensor([40, 36, 30, 24])
    targets = torch.tensor([[1, 2, 3, 4], [2, 2, 1, 0], [4, 3, 0, 0], [1, 0, 0, 0]])
    target_lengths = torch.tensor([4, 3, 2, 1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        logits, output_lengths = model(features, lengths)
        log_probs = logits.log_softmax(-1).transpose(0, 1)  # [T', B, C]
        loss = F.ctc_loss(log_probs, targets, output_lengths, target_lengths, zero_infinity=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_the_constructor_is_a_valid_config_schema():
    schema = schema_from_signature(DeepSpeech2, exclude={"num_classes"})
    assert schema(rnn_type="lstm", time_stride=4).rnn_type == "lstm"
    with pytest.raises(pydantic.ValidationError):
        schema(rnn_type="rnn")
    with pytest.raises(pydantic.ValidationError):
        schema(hidden=3)


def test_conv_dropout_is_off_by_default_and_a_dropout_schedule_reaches_it():
    torch.manual_seed(0)
    model = DeepSpeech2(num_classes=5, n_mels=20, **{**TINY, "dropout": 0.2}).train()
    features, lengths = torch.randn(3, 20, 24), torch.tensor([24, 16, 9])
    without = copy.deepcopy(model)
    without.conv_dropout = nn.Identity()  # the model as it was before conv_dropout
    assert model.conv_dropout.p == 0.0
    assert same_forward_and_draws(lambda: model(features, lengths)[0], lambda: without(features, lengths)[0])
    dropout_setting(model, "schedules.dropout").assign(0.3)  # a global dropout schedule
    assert model.conv_dropout.p == model.dropout.p == 0.3
    model.dropout.p = without.dropout.p = 0.0
    torch.manual_seed(1)
    dropped = model(features, lengths)[0]
    torch.manual_seed(1)
    assert not torch.allclose(dropped, without(features, lengths)[0])  # the convolution blocks' outputs are dropped
    with pytest.raises(pydantic.ValidationError):
        schema_from_signature(DeepSpeech2, exclude={"num_classes"})(conv_dropout=1.0)
