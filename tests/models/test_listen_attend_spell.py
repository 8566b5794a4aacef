from __future__ import annotations

import pydantic
import pytest
import torch
from torch.nn import functional as F

from cadence.models.listen_attend_spell import ListenAttendSpell
from cadence.models.seq2seq import AttentionDecoder, AttentionModel, select_state
from cadence.registry import schema_from_signature

TINY = dict(
    ctc_head=True, listener_hidden=8, speller_hidden=12, embedding_size=6, attention_size=8, location_channels=3, location_kernel=5
)
ATTENTIONS = [dict(attention="location"), dict(attention="content"), dict(attention="content", content_score="additive")]


def tiny_model(**options) -> ListenAttendSpell:
    return ListenAttendSpell(num_classes=6, n_mels=10, **{**TINY, **options})


@pytest.mark.parametrize("listener_layers, pyramid_layers", [(1, 2), (0, 3), (2, 0)])
def test_shapes_and_memory_lengths(listener_layers, pyramid_layers):
    torch.manual_seed(0)
    model = tiny_model(listener_layers=listener_layers, pyramid_layers=pyramid_layers)
    assert isinstance(model, AttentionModel) and isinstance(model.decoder, AttentionDecoder)
    for frames in (1, 7, 16, 29):
        lengths = torch.tensor([frames, max(1, frames - 5), 1])
        logits, memory, memory_lengths = model(torch.randn(3, 10, frames), lengths, torch.zeros(3, 5, dtype=torch.long))
        expected = [-(-length // 2**pyramid_layers) for length in lengths.tolist()]
        assert logits.shape == (3, 5, 6)
        assert memory.shape == (3, -(-frames // 2**pyramid_layers), 16)
        assert memory_lengths.tolist() == expected == model.output_lengths(lengths).tolist()
        assert model.ctc_head(memory).shape == (3, memory.shape[1], 6)


def test_invalid_layer_counts_are_rejected():
    with pytest.raises(ValueError, match="listener_layers"):
        tiny_model(listener_layers=0, pyramid_layers=0)


@pytest.mark.parametrize("options", ATTENTIONS + [dict(speller_layers=2, listener_layers=0)])
def test_an_utterance_alone_equals_it_inside_a_padded_batch(options):
    torch.manual_seed(0)
    model = tiny_model(pyramid_layers=2, **options).eval()
    short = torch.randn(1, 10, 13)
    padded = torch.cat([torch.cat([short, torch.full((1, 10, 18), 7.0)], dim=2), torch.randn(1, 10, 31)])
    previous = torch.tensor([[0, 3, 1, 4, 2, 5]])
    alone, alone_memory, alone_lengths = model(short, torch.tensor([13]), previous)
    batched, batched_memory, batched_lengths = model(padded, torch.tensor([13, 31]), previous.repeat(2, 1))
    frames = alone_lengths.item()
    assert frames == batched_lengths[0].item() == 4
    assert torch.allclose(alone_memory[0], batched_memory[0, :frames], atol=1e-5)
    assert batched_memory[0, frames:].abs().max() == 0  # the memory is 0 beyond its length
    assert torch.allclose(alone[0], batched[0], atol=1e-5)


@pytest.mark.parametrize("options", ATTENTIONS)
def test_attention_stays_within_the_memory_length(options):
    torch.manual_seed(0)
    model = tiny_model(pyramid_layers=1, **options)
    memory, memory_lengths = model.encode(torch.randn(2, 10, 20), torch.tensor([20, 9]))
    state = model.decoder.initial_state(memory, memory_lengths)
    for previous in ([0, 0], [3, 1], [2, 5]):
        _, state = model.decoder.step(torch.tensor(previous), state)
        weights = state["attention_weights"]  # [B, S]
        assert weights[1, 5:].abs().max() == 0
        assert torch.allclose(weights.sum(1), torch.ones(2))


@pytest.mark.parametrize("options", ATTENTIONS + [dict(speller_layers=2)])
def test_select_state_commutes_with_a_step(options):
    """Stepping a reordered state equals reordering the stepped outputs (what beam search relies on)."""
    torch.manual_seed(0)
    model = tiny_model(pyramid_layers=1, **options).eval()
    memory, memory_lengths = model.encode(torch.randn(3, 10, 14), torch.tensor([14, 6, 11]))
    state = model.decoder.initial_state(memory, memory_lengths)
    _, state = model.decoder.step(torch.tensor([0, 0, 0]), state)  # a non-trivial state
    assert all(value.shape[0] == 3 for value in state.values())  # batch first, memory and mask included
    index, previous = torch.tensor([2, 0, 0, 1]), torch.tensor([4, 1, 2])
    logits, stepped = model.decoder.step(previous, state)
    reordered_logits, reordered = model.decoder.step(previous[index], select_state(state, index))
    assert torch.allclose(reordered_logits, logits[index], atol=1e-6)
    assert stepped.keys() == reordered.keys()
    for name, value in select_state(stepped, index).items():
        assert torch.allclose(reordered[name].float(), value.float(), atol=1e-6), name


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
    torch.manual_seed(0)
    model = tiny_model(pyramid_layers=1, attention=attention, dropout=0.0)
    features, lengths = torch.randn(4, 10, 16), torch.tensor([16, 14, 11, 8])
    tokens = torch.tensor([[1, 2, 3, 4], [2, 2, 1, 0], [4, 3, 0, 0], [1, 0, 0, 0]])  # class ids, 0 = padding
    token_lengths = torch.tensor([4, 3, 2, 1])
    previous = torch.cat([torch.zeros(4, 1, dtype=torch.long), tokens], dim=1)  # <sos> first
    targets = torch.cat([tokens, torch.zeros(4, 1, dtype=torch.long)], dim=1)  # then <eos> = 0
    target_mask = torch.arange(5)[None, :] <= token_lengths[:, None]  # tokens and <eos>
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-2)
    attention_losses, ctc_losses = [], []
    for _ in range(25):
        logits, memory, memory_lengths = model(features, lengths, previous)
        attention_loss = F.cross_entropy(logits[target_mask], targets[target_mask])
        log_probs = model.ctc_head(memory).log_softmax(-1).transpose(0, 1)  # [S, B, C]
        ctc_loss = F.ctc_loss(log_probs, tokens, memory_lengths, token_lengths, zero_infinity=True)
        optimizer.zero_grad()
        (attention_loss + ctc_loss).backward()
        optimizer.step()
        attention_losses.append(attention_loss.item())
        ctc_losses.append(ctc_loss.item())
    assert attention_losses[-1] < 0.3 * attention_losses[0]
    assert ctc_losses[-1] < 0.5 * ctc_losses[0]


def test_the_ctc_head_is_off_by_default():
    assert ListenAttendSpell(num_classes=5, listener_hidden=8, speller_hidden=8).ctc_head is None


def test_the_constructor_is_a_valid_config_schema():
    schema = schema_from_signature(ListenAttendSpell, exclude={"num_classes"})
    assert schema(attention="content", content_score="additive").attention == "content"
    with pytest.raises(pydantic.ValidationError):
        schema(attention="monotonic")
