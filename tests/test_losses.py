import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from cadence.errors import ConfigError
from cadence.losses import (
    LossTerm,
    check_loss_terms,
    combine_losses,
    ctc_feasible,
    ctc_loss,
    ctc_minimum_frames,
    l2_penalty,
    masked_mse,
    sequence_cross_entropy,
)


def brute_force_ctc_probability(probabilities: torch.Tensor, label: list[int]) -> float:
    """Sum over every frame path that collapses to ``label`` (blank 0): the definition of CTC."""
    frames, classes = probabilities.shape
    total = 0.0
    for path in itertools.product(range(classes), repeat=frames):
        collapsed = [c for index, c in enumerate(path) if c != 0 and (index == 0 or path[index - 1] != c)]
        if collapsed == label:
            total += math.prod(float(probabilities[t, c]) for t, c in enumerate(path))
    return total


def test_ctc_loss_is_the_negative_log_of_the_summed_path_probability():
    torch.manual_seed(0)
    log_probs = torch.randn(1, 4, 3).log_softmax(-1)
    loss = ctc_loss(log_probs, torch.tensor([4]), torch.tensor([[1, 2]]), torch.tensor([2]), normalize="batch")
    expected = -math.log(brute_force_ctc_probability(log_probs[0].exp(), [1, 2]))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_ctc_normalizations_divide_as_documented():
    torch.manual_seed(1)
    log_probs = torch.randn(2, 6, 4).log_softmax(-1)
    targets, target_lengths, frames = torch.tensor([[1, 2, 3], [2, 0, 0]]), torch.tensor([3, 1]), torch.tensor([6, 5])
    per_utterance = F.ctc_loss(log_probs.transpose(0, 1), targets, frames, target_lengths, reduction="none")
    assert ctc_loss(log_probs, frames, targets, target_lengths, normalize="batch").item() == pytest.approx(per_utterance.mean().item())
    assert ctc_loss(log_probs, frames, targets, target_lengths, normalize="tokens").item() == pytest.approx(per_utterance.sum().item() / 4)
    by_length = (per_utterance / target_lengths).mean().item()
    assert ctc_loss(log_probs, frames, targets, target_lengths, normalize="target_length").item() == pytest.approx(by_length)


def test_ctc_minimum_frames_counts_a_blank_between_repeats():
    targets = torch.tensor([[1, 1, 2, 2], [3, 3, 0, 0], [4, 0, 0, 0]])
    lengths = torch.tensor([4, 2, 1])
    assert ctc_minimum_frames(targets, lengths).tolist() == [6, 3, 1]
    # Padding that repeats the last token must not count as a repeat.
    assert ctc_feasible(targets, lengths, torch.tensor([6, 2, 1])).tolist() == [True, False, True]


def test_sequence_cross_entropy_ignores_padding_and_smooths():
    logits = torch.randn(2, 3, 5)
    targets = torch.tensor([[1, 2, 0], [3, 0, 0]])
    lengths = torch.tensor([3, 1])
    padded_away = logits.clone()
    padded_away[1, 1:] = 100.0  # whatever sits beyond a length does not matter
    assert sequence_cross_entropy(logits, targets, lengths).item() == pytest.approx(
        sequence_cross_entropy(padded_away, targets, lengths).item()
    )
    tokens = torch.cat([logits[0, :3], logits[1, :1]])
    expected = F.cross_entropy(tokens, torch.tensor([1, 2, 0, 3]), label_smoothing=0.1)
    assert sequence_cross_entropy(logits, targets, lengths, 0.1).item() == pytest.approx(expected.item(), rel=1e-6)


def test_masked_mse_averages_over_valid_frames_only():
    predictions = torch.zeros(2, 3, 4)
    targets = torch.ones(2, 3, 4)
    targets[1, :, 2:] = 50.0  # padding of the second utterance
    assert masked_mse(predictions, targets, torch.tensor([4, 2])).item() == pytest.approx(1.0)


def test_loss_terms_weights_and_evaluation_only():
    parts = {"ctc": torch.tensor(2.0), "attention": torch.tensor(1.0)}
    terms = {"ctc": LossTerm(weight=0.5, evaluation_only=True), "attention": LossTerm(weight=1.0)}
    assert combine_losses(parts, terms).item() == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="unknown loss"):
        check_loss_terms({"ctcc": LossTerm()}, {"ctc"}, "task")
    with pytest.raises(ConfigError, match="no loss is trained"):
        check_loss_terms({"ctc": LossTerm(evaluation_only=True)}, {"ctc"}, "task")


def test_l2_penalty_counts_weights_not_biases():
    layer = torch.nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.fill_(2.0)
        layer.bias.fill_(5.0)
    assert l2_penalty(layer).item() == pytest.approx(16.0)
