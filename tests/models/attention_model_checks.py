"""Checks every attention (encoder-decoder) model must pass, shared by the LAS and TDS tests.

Each check takes ``build_model``, a function of no arguments that returns a fresh tiny model with
``num_classes=6`` and ``ctc_head=True``, and ``n_mels``, the model's feature bins. Each seeds the
random generator before building, so a model and its inputs are the same on every run.
Imported by the test files as ``from attention_model_checks import ...`` (pytest puts the test
file's folder on sys.path).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from cadence.models.seq2seq import AttentionDecoder, AttentionModel, select_state

ModelFactory = Callable[[], nn.Module]


def check_shapes_and_memory_lengths(build_model: ModelFactory, n_mels: int, subsampling: int, memory_size: int) -> None:
    """The model keeps the AttentionModel contract; memory lengths are ceil(lengths / subsampling)."""
    torch.manual_seed(0)
    model = build_model()
    assert isinstance(model, AttentionModel) and isinstance(model.decoder, AttentionDecoder)
    for frames in (1, 7, 16, 29):
        lengths = torch.tensor([frames, max(1, frames - 5), 1])
        logits, memory, memory_lengths = model(torch.randn(3, n_mels, frames), lengths, torch.zeros(3, 5, dtype=torch.long))
        expected = [-(-length // subsampling) for length in lengths.tolist()]
        assert logits.shape == (3, 5, 6)
        assert memory.shape == (3, -(-frames // subsampling), memory_size)
        assert memory_lengths.tolist() == expected == model.output_lengths(lengths).tolist()
        assert model.ctc_head(memory).shape == (3, memory.shape[1], 6)


def check_an_utterance_alone_equals_it_inside_a_padded_batch(
    build_model: ModelFactory, n_mels: int
) -> tuple[int, torch.Tensor]:
    """Padding (here a loud constant) changes neither the memory nor the logits of the short utterance.

    Returns the short utterance's memory length and the batch's memory [2, S, D], for model-specific checks.
    """
    torch.manual_seed(0)
    model = build_model().eval()
    short = torch.randn(1, n_mels, 13)
    padded = torch.cat([torch.cat([short, torch.full((1, n_mels, 18), 7.0)], dim=2), torch.randn(1, n_mels, 31)])
    previous = torch.tensor([[0, 3, 1, 4, 2, 5]])
    alone, alone_memory, alone_lengths = model(short, torch.tensor([13]), previous)
    batched, batched_memory, batched_lengths = model(padded, torch.tensor([13, 31]), previous.repeat(2, 1))
    frames = alone_lengths.item()
    assert frames == batched_lengths[0].item()
    assert torch.allclose(alone_memory[0], batched_memory[0, :frames], atol=1e-5)
    assert torch.allclose(alone[0], batched[0], atol=1e-5)
    return frames, batched_memory


def check_attention_stays_within_the_memory_length(build_model: ModelFactory, n_mels: int) -> None:
    """For a model that halves time once: 9 frames -> 5 memory frames, and no weight beyond them."""
    torch.manual_seed(0)
    model = build_model()
    memory, memory_lengths = model.encode(torch.randn(2, n_mels, 20), torch.tensor([20, 9]))
    state = model.decoder.initial_state(memory, memory_lengths)
    for previous in ([0, 0], [3, 1], [2, 5]):
        _, state = model.decoder.step(torch.tensor(previous), state)
        weights = state["attention_weights"]  # [B, S]
        assert weights[1, 5:].abs().max() == 0
        assert torch.allclose(weights.sum(1), torch.ones(2))


def check_select_state_commutes_with_a_step(build_model: ModelFactory, n_mels: int) -> None:
    """Stepping a reordered state equals reordering the stepped outputs (what beam search relies on)."""
    torch.manual_seed(0)
    model = build_model().eval()
    memory, memory_lengths = model.encode(torch.randn(3, n_mels, 14), torch.tensor([14, 6, 11]))
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


def check_cross_entropy_and_ctc_losses_fall(build_model: ModelFactory, n_mels: int, learning_rate: float) -> None:
    """25 Adam steps on one tiny batch cut the attention loss by 70 % and the CTC loss by half."""
    torch.manual_seed(0)
    model = build_model()
    features, lengths = torch.randn(4, n_mels, 16), torch.tensor([16, 14, 11, 8])
    tokens = torch.tensor([[1, 2, 3, 4], [2, 2, 1, 0], [4, 3, 0, 0], [1, 0, 0, 0]])  # class ids, 0 = padding
    token_lengths = torch.tensor([4, 3, 2, 1])
    previous = torch.cat([torch.zeros(4, 1, dtype=torch.long), tokens], dim=1)  # <sos> first
    targets = torch.cat([tokens, torch.zeros(4, 1, dtype=torch.long)], dim=1)  # then <eos> = 0
    target_mask = torch.arange(5)[None, :] <= token_lengths[:, None]  # tokens and <eos>
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
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
