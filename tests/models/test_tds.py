from __future__ import annotations

import pydantic
import pytest
import torch
from attention_model_checks import (
    check_an_utterance_alone_equals_it_inside_a_padded_batch,
    check_attention_stays_within_the_memory_length,
    check_cross_entropy_and_ctc_losses_fall,
    check_select_state_commutes_with_a_step,
    check_shapes_and_memory_lengths,
)

from cadence.models.seq2seq import teacher_forcing
from cadence.models.tds import TDSSeq2Seq
from cadence.registry import schema_from_signature

TINY = dict(ctc_head=True, channels=2, channel_growth=1, blocks_per_group=1, kernel_size=5, key_value_size=12)


def tiny_model(**options) -> TDSSeq2Seq:
    return TDSSeq2Seq(num_classes=6, n_mels=8, **{**TINY, **options})


@pytest.mark.parametrize("groups", [1, 2, 3])
def test_shapes_and_memory_lengths(groups):
    check_shapes_and_memory_lengths(lambda: tiny_model(groups=groups), n_mels=8, subsampling=2**groups, memory_size=12)


def test_the_hidden_sizes_follow_channels_and_width():
    model = TDSSeq2Seq(num_classes=5, n_mels=40, groups=3, channels=10, channel_growth=4, blocks_per_group=1)
    assert [norm.normalized_shape[0] for norm in model.encoder.subsampling_norms] == [400, 560, 720]


@pytest.mark.parametrize("options", [dict(), dict(groups=3, blocks_per_group=2)])
def test_an_utterance_alone_equals_it_inside_a_padded_batch(options):
    check_an_utterance_alone_equals_it_inside_a_padded_batch(lambda: tiny_model(**options), n_mels=8)


def test_parallel_teacher_forcing_equals_stepping():
    torch.manual_seed(0)
    model = tiny_model().eval()
    features, lengths = torch.randn(3, 8, 20), torch.tensor([20, 9, 14])
    previous = torch.tensor([[0, 2, 3, 1], [0, 5, 1, 1], [0, 4, 4, 2]])
    logits, memory, memory_lengths = model(features, lengths, previous)
    assert torch.allclose(logits, teacher_forcing(model.decoder, memory, memory_lengths, previous), atol=1e-5)


def test_attention_stays_within_the_memory_length():
    check_attention_stays_within_the_memory_length(lambda: tiny_model(groups=1), n_mels=8)


def test_select_state_commutes_with_a_step():
    check_select_state_commutes_with_a_step(tiny_model, n_mels=8)


def test_cross_entropy_and_ctc_losses_fall_on_a_tiny_batch():
    check_cross_entropy_and_ctc_losses_fall(lambda: tiny_model(groups=1, dropout=0.0), n_mels=8, learning_rate=2e-2)


def test_options_are_checked():
    assert tiny_model(ctc_head=False).ctc_head is None
    assert TDSSeq2Seq(num_classes=5, channels=2, blocks_per_group=1).ctc_head is None  # off by default
    with pytest.raises(ValueError, match="kernel_size"):
        tiny_model(kernel_size=4)
    schema = schema_from_signature(TDSSeq2Seq, exclude={"num_classes"})
    assert schema(groups=2).groups == 2
    with pytest.raises(pydantic.ValidationError):
        schema(group=2)
