"""FeatureNormalization (utterance and global), FeaturePipeline and compute_statistics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from cadence.errors import ConfigError
from cadence.data.audio import load_audio
from cadence.data.features import MFCC, LogMel
from cadence.data.normalization import FeatureNormalization
from cadence.data.pipeline import FeaturePipeline, compute_statistics
from cadence.data.spec_augment import SpecAugment

EPS = 1e-5


def padded_batch(lengths: list[int], num_features: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [B, F, max(lengths)] with an offset and scale per feature, and garbage in the padding
    (a large value, so any padding frame that leaked into a statistic would show)."""
    generator = torch.Generator().manual_seed(seed)
    features = 3.0 * torch.randn(len(lengths), num_features, max(lengths), generator=generator)
    features += torch.arange(num_features, dtype=torch.float32)[None, :, None]
    for row, length in enumerate(lengths):
        features[row, :, length:] = 1000.0
    return features, torch.tensor(lengths)


def valid_frames(features: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
    """All valid frames of a batch as numpy [frames, F]."""
    return np.concatenate([features[row, :, :length].T.double().numpy() for row, length in enumerate(lengths.tolist())])


def test_utterance_mode_uses_only_each_utterances_valid_frames() -> None:
    features, lengths = padded_batch([7, 3, 12, 1])
    normalized, out_lengths = FeatureNormalization("utterance", eps=EPS)(features, lengths)
    assert out_lengths.tolist() == lengths.tolist()
    for row, length in enumerate(lengths.tolist()):
        valid = features[row, :, :length].double().numpy()  # [F, length]
        expected = (valid - valid.mean(1, keepdims=True)) / np.sqrt(valid.var(1, keepdims=True) + EPS)
        np.testing.assert_allclose(normalized[row, :, :length].numpy(), expected, rtol=1e-4, atol=1e-4)
        assert torch.all(normalized[row, :, length:] == 0), "padding frames must be exactly 0"
        # The same utterance alone (no padding at all) gives the same values.
        alone, _ = FeatureNormalization("utterance", eps=EPS)(
            features[row : row + 1, :, :length], lengths[row : row + 1]
        )
        torch.testing.assert_close(normalized[row : row + 1, :, :length], alone)


def test_global_statistics_equal_a_direct_computation_over_valid_frames() -> None:
    normalization = FeatureNormalization("global", num_features=5)
    batches = [padded_batch([9, 4, 6], seed=1), padded_batch([2, 11], seed=2), padded_batch([5], seed=3)]
    for features, lengths in batches:
        normalization.accumulate(features, lengths)
    normalization.finalize()

    frames = np.concatenate([valid_frames(features, lengths) for features, lengths in batches])  # [37, 5]
    assert int(normalization.frames) == frames.shape[0] == 37
    np.testing.assert_allclose(normalization.mean.numpy(), frames.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(normalization.std.numpy(), frames.std(0), rtol=1e-6)

    features, lengths = batches[0]
    normalized, _ = normalization(features, lengths)
    expected = (valid_frames(features, lengths) - frames.mean(0)) / np.sqrt(frames.var(0) + EPS)
    np.testing.assert_allclose(valid_frames(normalized, lengths), expected, rtol=1e-5, atol=1e-5)
    assert torch.all(normalized[1, :, 4:] == 0)


def test_global_mode_refuses_to_run_before_statistics_exist() -> None:
    normalization = FeatureNormalization("global")
    features, lengths = padded_batch([3, 2])
    with pytest.raises(RuntimeError, match="no statistics yet.*compute_statistics"):
        normalization(features, lengths)
    with pytest.raises(RuntimeError, match="compute_statistics"):
        normalization.statistics_dict()
    with pytest.raises(RuntimeError, match="accumulate"):
        normalization.finalize()


def test_state_dict_round_trip_into_a_fresh_module() -> None:
    trained = FeatureNormalization("global")
    trained.accumulate(*padded_batch([8, 5, 3]))
    trained.finalize()
    state = trained.state_dict()
    assert set(state) == {"mean", "std", "frames"}
    assert int(state["frames"]) == 16

    restored = FeatureNormalization("global")  # num_features=None: sizes come from the checkpoint
    restored.load_state_dict(state)
    features, lengths = padded_batch([4, 6], seed=7)
    torch.testing.assert_close(restored(features, lengths), trained(features, lengths), rtol=0, atol=0)

    with pytest.raises(RuntimeError, match="size mismatch"):
        FeatureNormalization("global", num_features=3).load_state_dict(state)
    assert FeatureNormalization("utterance").state_dict() == {}


def test_json_round_trip(tmp_path: Path) -> None:
    trained = FeatureNormalization("global", num_features=5)
    trained.accumulate(*padded_batch([8, 5, 3]))
    trained.finalize()
    path = tmp_path / "statistics.json"
    path.write_text(json.dumps(trained.statistics_dict()))

    restored = FeatureNormalization("global", num_features=5)
    restored.load_statistics_dict(json.loads(path.read_text()))
    assert int(restored.frames) == 16
    torch.testing.assert_close(restored.mean, trained.mean, rtol=0, atol=0)
    torch.testing.assert_close(restored.std, trained.std, rtol=0, atol=0)
    with pytest.raises(ValueError, match="expects 4"):
        FeatureNormalization("global", num_features=4).load_statistics_dict(trained.statistics_dict())


@dataclass
class WaveformBatch:
    inputs: torch.Tensor  # [B, samples]
    input_lengths: torch.Tensor  # [B]


def waveform_batches(fsdd_files: list[Path], batch_size: int = 2) -> list[WaveformBatch]:
    waveforms = [load_audio(path, sample_rate=8000) for path in fsdd_files]
    batches = []
    for first in range(0, len(waveforms), batch_size):
        group = waveforms[first : first + batch_size]
        inputs = torch.nn.utils.rnn.pad_sequence(group, batch_first=True)
        batches.append(WaveformBatch(inputs, torch.tensor([waveform.shape[0] for waveform in group])))
    return batches


def test_compute_statistics_runs_the_stages_before_each_pending_normalization(fsdd_files: list[Path]) -> None:
    log_mel = LogMel()
    first, second = FeatureNormalization("global"), FeatureNormalization("global")
    augment = SpecAugment(time_warp=5)  # must be off while statistics are computed
    pipeline = FeaturePipeline([log_mel, augment, first, second])
    pipeline.train()
    assert pipeline.needs_statistics() == [first, second]

    batches = waveform_batches(fsdd_files)
    assert compute_statistics(pipeline, batches, device="cpu") == [first, second]

    assert pipeline.needs_statistics() == []
    assert pipeline.training and augment.training, "the caller's train/eval mode is restored"
    # The first normalization: statistics of the log-mel frames of each utterance alone.
    per_utterance = []
    for batch in batches:
        for waveform, length in zip(batch.inputs, batch.input_lengths.tolist()):
            features, _ = log_mel(waveform[None, :length], torch.tensor([length]))  # [1, 40, frames]
            per_utterance.append(features[0].T.double().numpy())
    frames = np.concatenate(per_utterance)  # [all valid frames, 40]
    assert int(first.frames) == frames.shape[0]
    np.testing.assert_allclose(first.mean.numpy(), frames.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(first.std.numpy(), frames.std(0), rtol=1e-5)
    # The second one saw the first applied: zero mean, unit deviation (up to eps).
    np.testing.assert_allclose(second.mean.numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(second.std.numpy(), 1.0, atol=1e-4)
    # And the pipeline's state_dict carries every stage's statistics.
    assert {"stages.2.mean", "stages.2.std", "stages.2.frames", "stages.3.frames"} <= set(pipeline.state_dict())


def test_compute_statistics_needs_a_reiterable_for_several_pending_stages(fsdd_files: list[Path]) -> None:
    pipeline = FeaturePipeline([LogMel(), FeatureNormalization("global"), FeatureNormalization("global")])
    with pytest.raises(ValueError, match="re-iterable"):
        compute_statistics(pipeline, iter(waveform_batches(fsdd_files[:2])), device="cpu")


def test_pipeline_applies_stages_in_order() -> None:
    pipeline = FeaturePipeline([LogMel(), FeatureNormalization("utterance")])
    assert isinstance(pipeline.stages, torch.nn.ModuleList)
    assert pipeline.needs_statistics() == []
    waveforms = torch.randn(2, 1600, generator=torch.Generator().manual_seed(0))
    features, frame_lengths = pipeline(waveforms, torch.tensor([1600, 800]))
    assert frame_lengths.tolist() == [21, 11]
    valid = features[1, :, :11]
    torch.testing.assert_close(valid.mean(-1), torch.zeros(40), rtol=0, atol=1e-5)
    assert torch.all(features[1, :, 11:] == 0)


@pytest.mark.parametrize("arguments", [{"mode": "batch"}, {"num_features": 0}, {"eps": 0.0}])
def test_rejects_impossible_settings(arguments: dict) -> None:
    with pytest.raises(ValueError):
        FeatureNormalization(**arguments)


def test_rejects_the_wrong_feature_count() -> None:
    normalization = FeatureNormalization("global", num_features=4)
    with pytest.raises(ConfigError, match="normalize expects 4 features, got 5"):
        normalization.accumulate(*padded_batch([3], num_features=5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_whole_front_end_gives_the_same_numbers_on_cuda(fsdd_files: list[Path]) -> None:
    def build() -> FeaturePipeline:
        stages = [MFCC(), FeatureNormalization("global"), SpecAugment(time_warp=3), FeatureNormalization("utterance")]
        return FeaturePipeline(stages)

    batches = waveform_batches(fsdd_files, batch_size=3)
    on_cpu, on_cuda = build(), build()
    compute_statistics(on_cpu, batches, device="cpu")
    compute_statistics(on_cuda, batches, device="cuda")
    torch.testing.assert_close(on_cuda.stages[1].mean.cpu(), on_cpu.stages[1].mean, rtol=1e-5, atol=1e-4)
    batch = batches[0]
    torch.manual_seed(5)  # SpecAugment draws on the CPU RNG wherever it runs: the same masks and warps
    expected, expected_lengths = on_cpu.train()(batch.inputs, batch.input_lengths)
    torch.manual_seed(5)
    features, frame_lengths = on_cuda.train()(batch.inputs.cuda(), batch.input_lengths.cuda())
    assert frame_lengths.cpu().tolist() == expected_lengths.tolist()
    torch.testing.assert_close(features.cpu(), expected, rtol=1e-4, atol=1e-3)
    for row, length in enumerate(frame_lengths.tolist()):
        assert torch.all(features[row, :, length:] == 0)
