"""From a manifest line to tensors: audio policy, and targets as class indices or token ids.

:class:`AudioDataProcessor` holds everything that decides how an utterance becomes model
input: the sample rate, the resampling and mono policies, the minimum duration, and how
targets are encoded (a label map for classification, a
:class:`~cadence.data.tokenizers.Tokenizer` for text). Targets are encoded once, for a
whole manifest, into numpy arrays (worker-safe).

Example:

    >>> from cadence.data.manifest import ManifestEntry
    >>> from cadence.data.tokenizers import WordTokenizer
    >>> processor = AudioDataProcessor(8000, target="text", tokenizer=WordTokenizer(["one", "two"]))
    >>> manifest = Manifest([ManifestEntry(id="a", audio=Path("/a.wav"), duration=1.0, text="two one two")])
    >>> processor.encode_targets(manifest)[0].tolist()
    [1, 0, 1]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from cadence.data.audio import MonoPolicy, load_audio
from cadence.data.manifest import Manifest
from cadence.data.packed import PackedSequences
from cadence.data.tokenizers import UNKNOWN_TOKEN, Tokenizer
from cadence.errors import DataError

__all__ = ["AudioDataProcessor", "TargetKind"]

logger = logging.getLogger("cadence")

TargetKind = Literal["label", "text", "none"]


class AudioDataProcessor:
    """Turns manifest lines into waveforms and targets.

    Args:
        sample_rate: the rate every waveform is delivered at.
        resample: resample other rates with soxr (logged once per rate); otherwise they are bad audio.
        mono: ``"mix"`` (average channels), ``"first"`` (channel 0) or ``"error"``.
        min_duration: shorter audio is bad audio (``too_short``), in seconds.
        target: ``"label"`` (class index from ``label_to_index``), ``"text"`` (token ids from
            ``tokenizer``) or ``"none"``.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        resample: bool = True,
        mono: MonoPolicy = "mix",
        min_duration: float = 0.0,
        target: TargetKind = "label",
        label_to_index: Mapping[str, int] | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        if target == "label" and label_to_index is None:
            raise ValueError("target='label' needs label_to_index")
        if target == "text" and tokenizer is None:
            raise ValueError("target='text' needs a tokenizer")
        self.sample_rate = sample_rate
        self.resample = resample
        self.mono = mono
        self.min_duration = min_duration
        self.target = target
        self.label_to_index = dict(label_to_index or {})
        self.tokenizer = tokenizer

    def load_audio(self, path: str, offset: float, duration: float | None, whole_utterance: bool = True) -> torch.Tensor:
        """The waveform ``[samples]`` of an utterance, or of a chunk of one (``whole_utterance=False``:
        no silence or minimum-length check); raises :class:`~cadence.data.audio.BadAudio`."""
        return load_audio(
            path, self.sample_rate, offset, duration, resample=self.resample, mono=self.mono,
            min_duration=self.min_duration, check_content=whole_utterance,
        )

    def encode_targets(self, manifest: Manifest) -> np.ndarray | PackedSequences | None:
        """All targets of ``manifest``: int64 class indices ``[N]``, token ids, or None."""
        if self.target == "none":
            return None
        field = "label" if self.target == "label" else "text"
        missing = manifest.first_without(field)
        if missing is not None:
            raise DataError(f"{manifest.where(missing)} has no '{field}'; every line needs one for target: {self.target}")
        if self.target == "label":
            return np.array([self._label_index(manifest, index) for index in range(len(manifest))], dtype=np.int64)
        self._check_unknown_units(manifest)
        return PackedSequences([self.tokenizer.encode(text) for text in manifest.texts])

    def _check_unknown_units(self, manifest: Manifest) -> None:
        """All units of the transcripts the tokenizer does not know: an error that lists every
        one (with its count and first utterance), or a warning when they map to ``<unk>``."""
        counts: dict[str, int] = {}
        first_index: dict[str, int] = {}
        for index, text in enumerate(manifest.texts):
            for unit in self.tokenizer.unknown_units(text):
                counts[unit] = counts.get(unit, 0) + 1
                first_index.setdefault(unit, index)
        if not counts:
            return
        units = "words" if self.tokenizer.kind == "word" else "characters"
        origin = f"{manifest.source}: " if manifest.source is not None else ""
        if self.tokenizer.unknown == "map":
            logger.warning(
                "%s%d %s not in the tokenizer read as %s: %s", origin, sum(counts.values()), units, UNKNOWN_TOKEN,
                ", ".join(f"{unit!r} {counts[unit]}x" for unit in counts),
            )
            return
        # In order of first appearance; where() names the utterance by id and audio path.
        listing = "; ".join(f"{unit!r} {counts[unit]}x, first in {manifest.where(first_index[unit])}" for unit in counts)
        raise DataError(
            f"{origin}{len(counts)} {units} of the transcripts are not in the {self.tokenizer.kind} tokenizer: {listing}. "
            "Rebuild the tokenizer from training transcripts that hold them, fix these transcripts, "
            f"or set data.tokenizer.unknown: map to read them as {UNKNOWN_TOKEN}"
        )

    def _label_index(self, manifest: Manifest, index: int) -> int:
        label = manifest.labels[index]
        if label not in self.label_to_index:
            known = ", ".join(sorted(self.label_to_index)[:20])
            raise DataError(
                f"{manifest.where(index)} has label {label!r}, which is not a known class ({known}); "
                "regenerate the label list from the training manifest"
            )
        return self.label_to_index[label]
