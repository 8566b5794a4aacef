"""From a manifest line to tensors: audio policy, and targets as class indices or token ids.

:class:`AudioDataProcessor` holds everything that decides how an utterance becomes model
input: the sample rate, the resampling and mono policies, the minimum duration, and how
targets are encoded (a label map for classification, a :class:`Vocabulary` for text).
Targets are encoded once, for a whole manifest, into numpy arrays (worker-safe).

Example:

    >>> vocabulary = Vocabulary.from_texts(["one two", "two"], unit="word")
    >>> vocabulary.tokens, vocabulary.encode("two one two"), vocabulary.decode([1, 0])
    (['one', 'two'], [1, 0, 1], 'two one')
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from cadence.data.audio import MonoPolicy, load_audio
from cadence.data.manifest import Manifest, write_bytes_atomic
from cadence.data.packed import PackedSequences
from cadence.errors import DataError

__all__ = ["AudioDataProcessor", "TargetKind", "Vocabulary"]

TargetKind = Literal["label", "text", "none"]


class Vocabulary:
    """Tokens of a transcript: characters (``unit="char"``, a space is a token) or words."""

    def __init__(self, tokens: Sequence[str], unit: Literal["char", "word"] = "char") -> None:
        if unit not in ("char", "word"):
            raise ValueError(f"unit must be 'char' or 'word', got {unit!r}")
        if len(set(tokens)) != len(tokens) or not tokens:
            raise DataError(f"a vocabulary needs unique tokens, got {list(tokens)!r}")
        self.tokens = list(tokens)
        self.unit = unit
        self.index = {token: position for position, token in enumerate(self.tokens)}

    @classmethod
    def from_texts(cls, texts: Iterable[str], unit: Literal["char", "word"] = "char") -> Vocabulary:
        """Every unit met in ``texts``, sorted (so the same texts always give the same ids)."""
        units: set[str] = set()
        for text in texts:
            units.update(text if unit == "char" else text.split())
        return cls(sorted(units), unit)

    def split(self, text: str) -> list[str]:
        return list(text) if self.unit == "char" else text.split()

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[token] for token in self.split(text)]
        except KeyError as error:
            raise DataError(
                f"token {error.args[0]!r} of {text!r} is not in the vocabulary; "
                "build the vocabulary from the training transcripts, or fix the transcript"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        joiner = "" if self.unit == "char" else " "
        return joiner.join(self.tokens[int(index)] for index in ids)

    def __len__(self) -> int:
        return len(self.tokens)

    def save(self, path: str | Path) -> None:
        document = {"unit": self.unit, "tokens": self.tokens}
        write_bytes_atomic(path, (json.dumps(document, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(document["tokens"], document["unit"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DataError(f"{path}: cannot read vocabulary ({error}); expected {{'unit': ..., 'tokens': [...]}}") from None


class AudioDataProcessor:
    """Turns manifest lines into waveforms and targets.

    Args:
        sample_rate: the rate every waveform is delivered at.
        resample: resample other rates with soxr (logged once per rate); otherwise they are bad audio.
        mono: ``"mix"`` (average channels), ``"first"`` (channel 0) or ``"error"``.
        min_duration: shorter audio is bad audio (``too_short``), in seconds.
        target: ``"label"`` (class index from ``label_to_index``), ``"text"`` (token ids from
            ``vocabulary``) or ``"none"``.
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
        vocabulary: Vocabulary | None = None,
    ) -> None:
        if target == "label" and label_to_index is None:
            raise ValueError("target='label' needs label_to_index")
        if target == "text" and vocabulary is None:
            raise ValueError("target='text' needs a vocabulary")
        self.sample_rate = sample_rate
        self.resample = resample
        self.mono = mono
        self.min_duration = min_duration
        self.target = target
        self.label_to_index = dict(label_to_index or {})
        self.vocabulary = vocabulary

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
        encoded = []
        for index in range(len(manifest)):
            try:
                encoded.append(self.vocabulary.encode(manifest.texts[index]))
            except DataError as error:
                raise DataError(f"{manifest.where(index)}: {error}") from None
        return PackedSequences(encoded)

    def _label_index(self, manifest: Manifest, index: int) -> int:
        label = manifest.labels[index]
        if label not in self.label_to_index:
            known = ", ".join(sorted(self.label_to_index)[:20])
            raise DataError(
                f"{manifest.where(index)} has label {label!r}, which is not a known class ({known}); "
                "regenerate the label list from the training manifest"
            )
        return self.label_to_index[label]
