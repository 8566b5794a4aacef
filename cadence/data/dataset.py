"""A manifest as a dataset of utterances (or segments of them), and the padded batch they form.

:class:`AudioDataset` reads ``dataset[key]`` where ``key`` is an utterance index or a
segment ``(index, start_s, duration_s)`` from a :class:`~cadence.data.sampler.BatchSampler`
plan (``start_s`` NaN: the whole utterance). Its :meth:`AudioDataset.collate` pads a list of
items into a :class:`Batch`.

Bad audio: with ``skip_bad_audio=True`` (training) an unusable file becomes a
:class:`Skipped` item, never an exception in a worker; ``collate`` drops it and lists it in
``Batch.skipped`` for the loader's quarantine. With ``skip_bad_audio=False`` (evaluation)
the :class:`~cadence.data.audio.BadAudio` error, which names the file, propagates.

Example:

    >>> import tempfile, pathlib, numpy, soundfile
    >>> from cadence.data.manifest import ManifestEntry
    >>> from cadence.data.processor import AudioDataProcessor
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> entries = []
    >>> for index, (label, samples) in enumerate([("yes", 800), ("no", 400)]):
    ...     soundfile.write(folder / f"{index}.wav", numpy.full(samples, 0.1, dtype="float32"), 8000)
    ...     entries.append(ManifestEntry(id=str(index), audio=folder / f"{index}.wav", duration=samples / 8000, label=label))
    >>> processor = AudioDataProcessor(8000, label_to_index={"no": 0, "yes": 1})
    >>> dataset = AudioDataset(Manifest(entries), processor)
    >>> batch = dataset.collate([dataset[0], dataset[1]])
    >>> batch.inputs.shape, batch.input_lengths.tolist(), batch.targets.tolist(), batch.ids
    (torch.Size([2, 800]), [800, 400], [1, 0], ['0', '1'])
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from cadence.data.audio import BadAudio
from cadence.data.manifest import Manifest
from cadence.data.packed import PackedSequences
from cadence.data.processor import AudioDataProcessor

__all__ = ["AudioDataset", "Batch", "Example", "Segment", "Skipped", "pad_last_axis"]

logger = logging.getLogger("cadence")

# (utterance index, start in seconds within the utterance or NaN for all of it, duration in seconds)
Segment = tuple[int, float, float]


@dataclasses.dataclass
class Example:
    """One loaded utterance: ``inputs [samples]`` (or ``[..., frames]``) and its target."""

    index: int
    inputs: torch.Tensor
    target: Any


@dataclasses.dataclass
class Skipped:
    """An utterance left out because its audio is unusable (a quarantine record)."""

    index: int
    id: str
    audio: str
    reason: str
    message: str


@dataclasses.dataclass
class Batch:
    """A padded batch.

    ``inputs [B, ..., T]`` zero-padded waveforms (or features) with ``input_lengths [B]``;
    ``targets``: class indices ``[B]``, token ids ``[B, L]`` zero-padded with
    ``target_lengths [B]``, or None; ``ids`` and ``speakers`` in batch order; ``skipped``:
    the quarantine records of utterances dropped from this batch.
    """

    inputs: torch.Tensor
    input_lengths: torch.Tensor
    targets: torch.Tensor | None
    target_lengths: torch.Tensor | None
    ids: list[str]
    speakers: list[str]
    skipped: list[Skipped] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def _map_tensors(self, function) -> Batch:
        changes = {
            name: function(getattr(self, name)) for name in ("inputs", "input_lengths", "targets", "target_lengths")
            if getattr(self, name) is not None
        }
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The batch on ``device`` (asynchronous copies when the batch is pinned)."""
        return self._map_tensors(lambda tensor: tensor.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)``."""
        return self._map_tensors(torch.Tensor.pin_memory)


def pad_last_axis(tensors: Sequence[torch.Tensor], value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack tensors that differ only in their last axis, padding it; returns (padded, lengths)."""
    lengths = torch.tensor([tensor.shape[-1] for tensor in tensors], dtype=torch.int64)
    padded = tensors[0].new_full((len(tensors), *tensors[0].shape[:-1], int(lengths.max())), value)
    for row, tensor in enumerate(tensors):
        padded[row, ..., : tensor.shape[-1]] = tensor
    return padded, lengths


class AudioDataset(Dataset):
    """The utterances of a :class:`Manifest`, loaded by an :class:`AudioDataProcessor`.

    With ``preload=True`` every waveform is read once, here, into one float32 tensor plus
    offsets, so later epochs do no disk I/O and forked workers share the memory; that suits
    corpora that fit in RAM (FSDD: about 40 MB of audio). Bad files met while preloading are
    remembered (and raise at once when ``skip_bad_audio`` is False).
    """

    def __init__(
        self, manifest: Manifest, processor: AudioDataProcessor, *, preload: bool = False, skip_bad_audio: bool = False
    ) -> None:
        self.manifest = manifest
        self.processor = processor
        self.skip_bad_audio = skip_bad_audio
        self.targets = processor.encode_targets(manifest)
        self._waveforms: torch.Tensor | None = None
        self._waveform_offsets: np.ndarray | None = None
        self._bad: dict[int, BadAudio] = {}
        if preload:
            self._preload()

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def durations(self) -> np.ndarray:
        """Seconds per utterance, from the manifest (what samplers plan with)."""
        return self.manifest.durations

    def _read(self, index: int, start: float, duration: float) -> torch.Tensor:
        """Segment ``[start, start + duration)`` of utterance ``index`` (NaN start: all of it)."""
        manifest_offset = self.manifest.offsets[index]
        offset = 0.0 if np.isnan(manifest_offset) else float(manifest_offset)
        whole = math.isnan(start)
        if whole:
            start, duration = 0.0, float(self.manifest.durations[index])
        return self.processor.load_audio(self.manifest.audio[index], offset + start, duration, whole_utterance=whole)

    def _preload(self) -> None:
        started = time.perf_counter()
        waveforms = []
        for index in range(len(self)):
            try:
                waveforms.append(self._read(index, math.nan, math.nan))
            except BadAudio as error:
                if not self.skip_bad_audio:
                    raise
                self._bad[index] = error
                waveforms.append(torch.zeros(0))
        self._waveform_offsets = np.zeros(len(waveforms) + 1, dtype=np.int64)
        np.cumsum([waveform.shape[0] for waveform in waveforms], out=self._waveform_offsets[1:])
        self._waveforms = torch.cat(waveforms)
        logger.info(
            "preloaded %d utterances (%.1f MB of audio) in %.1f s%s",
            len(self), self._waveforms.numel() * 4 / 1e6, time.perf_counter() - started,
            f"; {len(self._bad)} unusable" if self._bad else "",
        )

    def _preloaded(self, index: int, start: float, duration: float) -> torch.Tensor:
        begin, end = int(self._waveform_offsets[index]), int(self._waveform_offsets[index + 1])
        if not math.isnan(start):
            rate = self.processor.sample_rate
            begin = min(begin + round(start * rate), end)
            end = min(begin + round(duration * rate), end)
        # A copy, not a view: a view would pin (and, across processes, ship) the whole buffer.
        return self._waveforms[begin:end].clone()

    def target(self, index: int) -> Any:
        if self.targets is None:
            return None
        if isinstance(self.targets, PackedSequences):
            return torch.from_numpy(self.targets[index].copy())
        return int(self.targets[index])

    def __getitem__(self, key: int | Segment) -> Union[Example, Skipped]:
        index, start, duration = (int(key[0]), float(key[1]), float(key[2])) if isinstance(key, (tuple, list)) else (int(key), math.nan, math.nan)
        try:
            if index in self._bad:
                raise self._bad[index]
            if self._waveforms is not None:
                waveform = self._preloaded(index, start, duration)
            else:
                waveform = self._read(index, start, duration)
        except BadAudio as error:
            if not self.skip_bad_audio:
                raise
            return Skipped(index, self.manifest.ids[index], error.path, error.reason, str(error))
        return Example(index=index, inputs=waveform, target=self.target(index))

    def collate(self, items: Sequence[Union[Example, Skipped]]) -> Batch:
        """Pad the usable items into a :class:`Batch`; skipped ones go to ``Batch.skipped``.

        A batch whose every item was skipped has zero rows (the loader drops it).
        """
        examples = [item for item in items if isinstance(item, Example)]
        skipped = [item for item in items if isinstance(item, Skipped)]
        if not examples:
            empty = torch.zeros(0, 0)
            return Batch(empty, torch.zeros(0, dtype=torch.int64), None, None, [], [], skipped)
        inputs, input_lengths = pad_last_axis([example.inputs for example in examples])
        targets = target_lengths = None
        if self.processor.target == "label":
            targets = torch.tensor([example.target for example in examples], dtype=torch.int64)
        elif self.processor.target == "text":
            targets, target_lengths = pad_last_axis([example.target for example in examples], value=0)
        return Batch(
            inputs=inputs, input_lengths=input_lengths, targets=targets, target_lengths=target_lengths,
            ids=[self.manifest.ids[example.index] for example in examples],
            speakers=[self.manifest.speakers[example.index] for example in examples],
            skipped=skipped,
        )
