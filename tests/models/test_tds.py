from __future__ import annotations

import pydantic
import pytest
import torch
from torch.nn import functional as F

from cadence.models.seq2seq import AttentionDecoder, AttentionModel, select_state, teacher_forcing
from cadence.models.tds import TDSSeq2Seq
from cadence.registry import schema_from_signature

TINY = dict(ctc_head=True, channels=2, channel_growth=1, blocks_per_group=1, kernel_size=5, key_value_size=12)


def tiny_model(**options) -> TDSSeq2Seq:
    return TDSSeq2Seq(num_classes=6, n_mels=8, **{**TINY, **options})


@pytest.mark.parametrize("groups", [1, 2, 3])
def test_shapes_and_memory_lengths(groups):
    torch.manual_seed(0)
    model = tiny_model(groups=groups)
    assert isinstance(model, AttentionModel) and isinstance(model.decoder, AttentionDecoder)
    for frames in (1, 7, 16, 29):
        lengths = torch.tensor([frames, max(1, frames - 5), 1])
        logits, memory, memory_lengths = model(torch.randn(3, 8, frames), lengths, torch.zeros(3, 5, dtype=torch.long))
        expected = [-(-length // 2**groups) for length in lengths.tolist()]
        assert logits.shape == (3, 5, 6)
        assert memory.shape == (3, -(-frames // 2**groups), 12)
        assert memory_lengths.tolist() == expected == model.output_lengths(lengths).tolist()
        assert model.ctc_head(memory).shape == (3, memory.shape[1], 6)


def test_the_hidden_sizes_follow_channels_and_width():
    model = TDSSeq2Seq(num_classes=5, n_mels=40, groups=3, channels=10, channel_growth=4, blocks_per_group=1)
    assert [norm.normalized_shape[0] for norm in model.encoder.subsampling_norms] == [400, 560, 720]


@pytest.mark.parametrize("options", [dict(), dict(groups=3, blocks_per_group=2)])
def test_an_utterance_alone_equals_it_inside_a_padded_batch(options):
    torch.manual_seed(0)
    model = tiny_model(**options).eval()
    short = torch.randn(1, 8, 13)
    padded = torch.cat([torch.cat([short, torch.full((1, 8, 18), 7.0)], dim=2), torch.randn(1, 8, 31)])
    previous = torch.tensor([[0, 3, 1, 4, 2, 5]])
    alone, alone_memory, alone_lengths = model(short, torch.tensor([13]), previous)
    batched, batched_memory, batched_lengths = model(padded, torch.tensor([13, 31]), previous.repeat(2, 1))
    frames = alone_lengths.item()
    assert frames == batched_lengths[0].item()
    assert torch.allclose(alone_memory[0], batched_memory[0, :frames], atol=1e-5)
    assert torch.allclose(alone[0], batched[0], atol=1e-5)


def test_parallel_teacher_forcing_equals_stepping():
    torch.manual_seed(0)
    model = tiny_model().eval()
    features, lengths = torch.randn(3, 8, 20), torch.tensor([20, 9, 14])
    previous = torch.tensor([[0, 2, 3, 1], [0, 5, 1, 1], [0, 4, 4, 2]])
    logits, memory, memory_lengths = model(features, lengths, previous)
    assert torch.allclose(logits, teacher_forcing(model.decoder, memory, memory_lengths, previous), atol=1e-5)


def test_attention_stays_within_the_memory_length():
    torch.manual_seed(0)
    model = tiny_model(groups=1)
    memory, memory_lengths = model.encode(torch.randn(2, 8, 20), torch.tensor([20, 9]))
    state = model.decoder.initial_state(memory, memory_lengths)
    for previous in ([0, 0], [3, 1]):
        _, state = model.decoder.step(torch.tensor(previous), state)
        assert state["attention_weights"][1, 5:].abs().max() == 0  # 9 frames -> 5 memory frames
        assert torch.allclose(state["attention_weights"].sum(1), torch.ones(2))


def test_select_state_commutes_with_a_step():
    """Stepping a reordered state equals reordering the stepped outputs (what beam search relies on)."""
    torch.manual_seed(0)
    model = tiny_model().eval()
    memory, memory_lengths = model.encode(torch.randn(3, 8, 14), torch.tensor([14, 6, 11]))
    state = model.decoder.initial_state(memory, memory_lengths)
    _, state = model.decoder.step(torch.tensor([0, 0, 0]), state)
    assert all(value.shape[0] == 3 for value in state.values())  # batch first, memory and mask included
    index, previous = torch.tensor([2, 0, 0, 1]), torch.tensor([4, 1, 2])
    logits, stepped = model.decoder.step(previous, state)
    reordered_logits, reordered = model.decoder.step(previous[index], select_state(state, index))
    assert torch.allclose(reordered_logits, logits[index], atol=1e-6)
    assert stepped.keys() == reordered.keys()
    for name, value in select_state(stepped, index).items():
        assert torch.allclose(reordered[name].float(), value.float(), atol=1e-6), name


def test_cross_entropy_and_ctc_losses_fall_on_a_tiny_batch():
    torch.manual_seed(0)
    model = tiny_model(groups=1, dropout=0.0)
    features, lengths = torch.randn(4, 8, 16), torch.tensor([16, 14, 11, 8])
    tokens = torch.tensor([[1, 2, 3, 4], [2, 2, 1, 0], [4, 3, 0, 0], [1, 0, 0, 0]])  # class ids, 0 = padding
    token_lengths = torch.tensor([4, 3, 2, 1])
    previous = torch.cat([torch.zeros(4, 1, dtype=torch.long), tokens], dim=1)  # <sos> first
    targets = torch.cat([tokens, torch.zeros(4, 1, dtype=torch.long)], dim=1)  # then <eos> = 0
    target_mask = torch.arange(5)[None, :] <= token_lengths[:, None]  # tokens and <eos>
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
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


def test_options_are_checked():
    assert tiny_model(ctc_head=False).ctc_head is None
    assert TDSSeq2Seq(num_classes=5, channels=2, blocks_per_group=1).ctc_head is None  # off by default
    with pytest.raises(ValueError, match="kernel_size"):
        tiny_model(kernel_size=4)
    schema = schema_from_signature(TDSSeq2Seq, exclude={"num_classes"})
    assert schema(groups=2).groups == 2
    with pytest.raises(pydantic.ValidationError):
        schema(group=2)
