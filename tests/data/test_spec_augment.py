"""SpecAugment: masks and warps stay inside each utterance's valid frames, within their bounds, reproducibly."""

from __future__ import annotations

import pytest
import torch

from cadence.data.spec_augment import SpecAugment

PADDING_VALUE = 0.0


def random_batch(generator: torch.Generator, num_features: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of 1..6 utterances with random lengths (0 and 1 included), values in [1, 2), zero padding."""
    batch = int(torch.randint(1, 7, (), generator=generator))
    lengths = torch.randint(0, 120, (batch,), generator=generator)
    if batch > 2:
        lengths[1:3] = torch.tensor([0, 1])
    features = 1.0 + torch.rand(batch, num_features, int(lengths.max().clamp_min(1)), generator=generator)
    padding = torch.arange(features.shape[-1])[None, None, :] >= lengths[:, None, None]
    return features.masked_fill(padding, PADDING_VALUE), lengths


def mask_rows_and_columns(masked: torch.Tensor, length: int) -> tuple[list[int], list[int]]:
    """For one utterance [F, T] whose values were all >= 1: the fully masked bands and frames."""
    zero = masked[:, :length] == 0
    bands = [band for band in range(masked.shape[0]) if length > 0 and bool(zero[band].all())]
    frames = [frame for frame in range(length) if bool(zero[:, frame].all())]
    return bands, frames


def is_one_span(positions: list[int]) -> bool:
    return positions == list(range(positions[0], positions[0] + len(positions))) if positions else True


@pytest.mark.parametrize("mask_value", [0.0, -3.0])
def test_never_touches_padding_over_many_random_batches(mask_value: float) -> None:
    augment = SpecAugment(freq_masks=3, freq_width=8, time_masks=4, time_width=50, time_warp=10, mask_value=mask_value)
    generator = torch.Generator().manual_seed(1)
    for _ in range(200):
        features, lengths = random_batch(generator)
        augmented, out_lengths = augment(features, lengths, generator=generator)
        assert augmented.shape == features.shape
        assert out_lengths.tolist() == lengths.tolist()
        for row, length in enumerate(lengths.tolist()):
            assert torch.all(augmented[row, :, length:] == PADDING_VALUE), (row, length)


def test_is_the_identity_in_eval_mode() -> None:
    augment = SpecAugment(time_warp=5).eval()
    features, lengths = random_batch(torch.Generator().manual_seed(0))
    augmented, out_lengths = augment(features, lengths)
    assert augmented is features and out_lengths is lengths


def test_frequency_masks_are_single_spans_within_bounds_over_valid_frames() -> None:
    augment = SpecAugment(freq_masks=1, freq_width=5, time_masks=0)
    features = 1.0 + torch.rand(64, 12, 30, generator=torch.Generator().manual_seed(0))
    lengths = torch.randint(1, 31, (64,), generator=torch.Generator().manual_seed(1))
    features = features.masked_fill(torch.arange(30)[None, None, :] >= lengths[:, None, None], 0.0)
    widths = []
    for seed in range(10):
        masked, _ = augment(features, lengths, generator=torch.Generator().manual_seed(seed))
        for row, length in enumerate(lengths.tolist()):
            bands, _ = mask_rows_and_columns(masked[row], length)
            assert is_one_span(bands) and len(bands) <= 5
            # Nothing masked beyond the masked bands, and nothing at all in the padding.
            assert int((masked[row, :, :length] == 0).sum()) == len(bands) * length
            assert torch.equal(masked[row, :, length:], features[row, :, length:])
            widths.append(len(bands))
    # Widths are uniform in 0..5: every width occurs in 640 draws, so masks do happen.
    assert set(widths) == set(range(6))


def test_time_masks_are_single_spans_within_bounds_and_the_utterance() -> None:
    augment = SpecAugment(freq_masks=0, time_masks=1, time_width=12, time_width_ratio=0.2)
    features = 1.0 + torch.rand(64, 6, 80, generator=torch.Generator().manual_seed(0))
    lengths = torch.randint(1, 81, (64,), generator=torch.Generator().manual_seed(1))
    features = features.masked_fill(torch.arange(80)[None, None, :] >= lengths[:, None, None], 0.0)
    widths, last_frames = [], []
    for seed in range(10):
        masked, _ = augment(features, lengths, generator=torch.Generator().manual_seed(seed))
        for row, length in enumerate(lengths.tolist()):
            _, frames = mask_rows_and_columns(masked[row], length)
            assert is_one_span(frames)
            assert len(frames) <= min(12, int(0.2 * length)), (len(frames), length)
            assert int((masked[row, :, :length] == 0).sum()) == len(frames) * masked.shape[1]
            widths.append(len(frames))
            last_frames += [frames[-1] == length - 1] if frames else []
    assert max(widths) == 12 and min(widths) == 0
    assert any(last_frames), "a mask may end exactly at the last valid frame"


def test_time_warp_keeps_length_padding_and_order() -> None:
    augment = SpecAugment(freq_masks=0, time_masks=0, time_warp=6)
    lengths = torch.tensor([50, 12, 30, 13])  # 12 <= 2 W: too short to warp
    ramp = torch.arange(50, dtype=torch.float32)[None, None, :].expand(4, 3, 50)
    features = ramp.masked_fill(torch.arange(50)[None, None, :] >= lengths[:, None, None], 0.0).contiguous()
    changed = set()
    for seed in range(20):
        warped, out_lengths = augment(features, lengths, generator=torch.Generator().manual_seed(seed))
        assert warped.shape == features.shape and out_lengths.tolist() == lengths.tolist()
        for row, length in enumerate(lengths.tolist()):
            valid = warped[row, :, :length]
            assert torch.all(warped[row, :, length:] == 0)
            # Linear resampling of a ramp: still non-decreasing, within the ramp's range.
            assert torch.all(valid[:, 1:] >= valid[:, :-1] - 1e-5)
            assert valid.min() >= 0 and valid.max() <= length - 1
            if not torch.equal(valid, features[row, :, :length]):
                changed.add(row)
    assert changed == {0, 2, 3}, "long utterances are warped, the short one never"


def test_a_fixed_seed_reproduces_the_augmentation() -> None:
    augment = SpecAugment(freq_masks=2, freq_width=5, time_masks=2, time_width=20, time_warp=4)
    features, lengths = random_batch(torch.Generator().manual_seed(3))
    torch.manual_seed(123)
    first, _ = augment(features, lengths)
    torch.manual_seed(123)
    second, _ = augment(features, lengths)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    with_generator, _ = augment(features, lengths, generator=torch.Generator().manual_seed(123))
    torch.testing.assert_close(with_generator, first, rtol=0, atol=0)  # the same stream of draws
    other_seed, _ = augment(features, lengths, generator=torch.Generator().manual_seed(124))
    assert not torch.equal(other_seed, first)


@pytest.mark.parametrize(
    "arguments", [{"freq_masks": -1}, {"time_width": -1}, {"time_warp": -2}, {"time_width_ratio": 1.5}]
)
def test_rejects_impossible_settings(arguments: dict) -> None:
    with pytest.raises(ValueError):
        SpecAugment(**arguments)
