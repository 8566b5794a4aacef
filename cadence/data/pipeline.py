"""A front end as a list of ``(x, lengths) -> (x, lengths)`` stages, and the one pass that
computes its global normalization statistics.

Example:

    >>> from types import SimpleNamespace
    >>> from cadence.data.features import LogMel
    >>> from cadence.data.normalization import FeatureNormalization
    >>> pipeline = FeaturePipeline([LogMel(), FeatureNormalization("global")])
    >>> pipeline.needs_statistics()
    [FeatureNormalization(mode='global', num_features=None, eps=1e-05)]
    >>> batches = [SimpleNamespace(inputs=torch.randn(2, 800), input_lengths=torch.tensor([800, 400]))]
    >>> finalized = compute_statistics(pipeline, batches, device="cpu")
    >>> pipeline.needs_statistics(), int(pipeline.stages[1].frames)  # 11 + 6 valid frames
    ([], 17)
    >>> features, frame_lengths = pipeline(torch.randn(2, 800), torch.tensor([800, 400]))
    >>> features.shape, frame_lengths.tolist()
    (torch.Size([2, 40, 11]), [11, 6])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from cadence.data.normalization import FeatureNormalization
from cadence.runtime.logs import progress

__all__ = ["FeaturePipeline", "compute_statistics"]


class FeaturePipeline(nn.Module):
    """Applies each stage in order: ``x, lengths = stage(x, lengths)``.

    Typical stages: a feature extractor (waveforms ``[B, samples]`` -> ``[B, F, frames]``),
    :class:`FeatureNormalization`, :class:`cadence.data.spec_augment.SpecAugment` (active in
    training mode only). ``stages`` is an ``nn.ModuleList``, so the state_dict keys are
    ``stages.<index>.<buffer>`` and ``.to(device)`` moves every stage.
    """

    def __init__(self, stages: list[nn.Module]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for stage in self.stages:
            x, lengths = stage(x, lengths)
        return x, lengths

    def needs_statistics(self) -> list[FeatureNormalization]:
        """The global normalization stages whose statistics are not computed yet, in order."""
        return [
            stage for stage in self.stages if isinstance(stage, FeatureNormalization) and not stage.has_statistics
        ]


@torch.no_grad()
def compute_statistics(
    pipeline: FeaturePipeline, batches: Iterable[Any], device: torch.device | str
) -> list[FeatureNormalization]:
    """Compute every missing global normalization statistic of ``pipeline`` from ``batches``.

    Each batch has ``.inputs [B, samples]`` (float waveforms) and ``.input_lengths [B]``.
    For each unfinished global :class:`FeatureNormalization`, in order, the stages before it
    run over all batches (in eval mode, so augmentation is off), their outputs are
    accumulated and the statistics finalized. A later normalization sees the earlier ones
    already applied, so each pending stage takes its own pass: with more than one pending,
    ``batches`` must be re-iterable (a list or a DataLoader, not a generator).

    The pipeline is moved to ``device`` (like ``model.to(device)``); each stage's
    train/eval mode is restored afterwards. Returns the stages it finalized.
    """
    pending = pipeline.needs_statistics()
    if len(pending) > 1 and iter(batches) is batches:
        raise ValueError(
            f"{len(pending)} normalization stages need statistics, one pass over the data each: "
            "pass a re-iterable (a list or a DataLoader), not a one-shot iterator"
        )
    pipeline.to(device)
    training_modes = {module: module.training for module in pipeline.modules()}
    pipeline.eval()
    try:
        for normalization in pending:
            position = next(index for index, stage in enumerate(pipeline.stages) if stage is normalization)
            stages_before = pipeline.stages[:position]
            for batch in progress(batches, True, "feature statistics", total=_length_or_none(batches)):
                if batch.inputs.shape[0] == 0:
                    continue  # every utterance of the batch was unusable audio
                x = batch.inputs.to(device)  # [B, samples]
                lengths = batch.input_lengths.to(device)  # [B]
                for stage in stages_before:
                    x, lengths = stage(x, lengths)
                normalization.accumulate(x, lengths)
            normalization.finalize()
    finally:
        for module, training in training_modes.items():
            module.training = training
    return pending


def _length_or_none(batches: Iterable[Any]) -> int | None:
    """How many batches, for the progress bar; None when they cannot say (an iterable dataset)."""
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:
        return None
