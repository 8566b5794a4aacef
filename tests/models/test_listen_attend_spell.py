from __future__ import annotations

import copy

import pydantic
import pytest
import torch
from torch import nn
from attention_model_checks import (
    check_an_utterance_alone_equals_it_inside_a_padded_batch,
    check_attention_stays_within_the_memory_length,
    check_cross_entropy_and_ctc_losses_fall,
    check_select_state_commutes_with_a_step,
    check_shapes_and_memory_lengths,
)

from cadence.models.listen_attend_spell import ListenAttendSpell
from cadence.optim.scheduled_values import dropout_setting
from cadence.registry import schema_from_signature
from random_draws import same_forward_and_draws

TINY = dict(
    ctc_head=True, listener_hidden=8, speller_hidden=12, embedding_size=6, attention_size=8, location_channels=3, location_kernel=5
)
ATTENTIONS = [dict(attention="location"), dict(attention="content"), dict(attention="content", content_score="additive")]


def tiny_model(**options) -> ListenAttendSpell:
    return ListenAttendSpell(num_classes=6, n_mels=10, **{**TINY, **options})


@pytest.mark.parametrize("listener_layers, pyramid_layers", [(1, 2), (0, 3), (2, 0)])
def test_shapes_and_memory_lengths(listener_layers, pyramid_layers):
    check_shapes_and_memory_lengths(
        lambda: tiny_model(listener_layers=listener_layers, pyramid_layers=pyramid_layers),
        n_mels=10,
        subsampling=2**pyramid_layers,
        memory_size=16,
    )


def test_invalid_layer_counts_are_rejected():
    with pytest.raises(ValueError, match="listener_layers"):
        tiny_model(listener_layers=0, pyramid_layers=0)


@pytest.mark.parametrize("options", ATTENTIONS + [dict(speller_layers=2, listener_layers=0)])
def test_an_utterance_alone_equals_it_inside_a_padded_batch(options):
    frames, batched_memory = check_an_utterance_alone_equals_it_inside_a_padded_batch(
        lambda: tiny_model(pyramid_layers=2, **options), n_mels=10
    )
    assert frames == 4
    assert batched_memory[0, frames:].abs().max() == 0  # the memory is 0 beyond its length


@pytest.mark.parametrize("options", ATTENTIONS)
def test_attention_stays_within_the_memory_length(options):
    check_attention_stays_within_the_memory_length(lambda: tiny_model(pyramid_layers=1, **options), n_mels=10)


@pytest.mark.parametrize("options", ATTENTIONS + [dict(speller_layers=2)])
def test_select_state_commutes_with_a_step(options):
    check_select_state_commutes_with_a_step(lambda: tiny_model(pyramid_layers=1, **options), n_mels=10)


def test_teacher_forcing_equals_stepping():
    torch.manual_seed(0)
    model = tiny_model(pyramid_layers=1).eval()
    features, lengths, previous = torch.randn(2, 10, 12), torch.tensor([12, 7]), torch.tensor([[0, 2, 3], [0, 5, 1]])
    logits, memory, memory_lengths = model(features, lengths, previous)
    state = model.decoder.initial_state(memory, memory_lengths)
    for position in range(3):
        step_logits, state = model.decoder.step(previous[:, position], state)
        assert torch.allclose(step_logits, logits[:, position], atol=1e-6)


@pytest.mark.parametrize("attention", ["location", "content"])
def test_cross_entropy_and_ctc_losses_fall_on_a_tiny_batch(attention):
    check_cross_entropy_and_ctc_losses_fall(
        lambda: tiny_model(pyramid_layers=1, attention=attention, dropout=0.0), n_mels=10, learning_rate=5e-2
    )


def test_the_ctc_head_is_off_by_default():
    assert ListenAttendSpell(num_classes=5, listener_hidden=8, speller_hidden=8).ctc_head is None


def test_the_constructor_is_a_valid_config_schema():
    schema = schema_from_signature(ListenAttendSpell, exclude={"num_classes"})
    assert schema(attention="content", content_score="additive").attention == "content"
    with pytest.raises(pydantic.ValidationError):
        schema(attention="monotonic")


def test_embedding_dropout_is_off_by_default_and_a_dropout_schedule_reaches_it():
    torch.manual_seed(0)
    model = tiny_model(pyramid_layers=1, speller_layers=2, dropout=0.2).train()
    features, lengths, previous = torch.randn(2, 10, 12), torch.tensor([12, 7]), torch.tensor([[0, 2, 3], [0, 5, 1]])
    without = copy.deepcopy(model)
    without.decoder.embedding_dropout = nn.Identity()  # the model as it was before embedding_dropout
    assert model.decoder.embedding_dropout.p == 0.0
    assert same_forward_and_draws(lambda: model(features, lengths, previous)[0], lambda: without(features, lengths, previous)[0])
    dropout_setting(model, "schedules.dropout").assign(0.4)  # a global dropout schedule
    assert model.decoder.embedding_dropout.p == model.decoder.dropout.p == 0.4
    for module in (model, without):
        for dropout in module.modules():
            if isinstance(dropout, nn.Dropout) and dropout is not model.decoder.embedding_dropout:
                dropout.p = 0.0
    torch.manual_seed(1)
    dropped = model(features, lengths, previous)[0]
    torch.manual_seed(1)
    assert not torch.allclose(dropped, without(features, lengths, previous)[0])  # the speller's input embeddings are dropped
    model.eval(), without.eval()
    assert torch.equal(model(features, lengths, previous)[0], without(features, lengths, previous)[0])
    assert schema_from_signature(ListenAttendSpell, exclude={"num_classes"})(embedding_dropout=0.1).embedding_dropout == 0.1
