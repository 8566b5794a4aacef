"""Datasets of manifest entries, and the padded batch they collate into.

Worker safety: a DataLoader worker that touches a Python object (a list of dicts, a list
of str) writes to its reference count, which copies the memory page it lives on; with
many workers and a large manifest each worker slowly copies the whole manifest. So the
datasets here keep per-utterance data in a few numpy arrays and byte buffers, which
workers only read.

Example:

    >>> import tempfile, pathlib, numpy, soundfile
    >>> from cadence.data.manifest import ManifestEntry
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> entries = []
    >>> for index, (label, samples) in enumerate([("yes", 800), ("no", 400)]):
    ...     path = folder / f"{index}.wav"
    ...     soundfile.write(path, numpy.zeros(samples, dtype="float32"), 8000)
    ...     entries.append(ManifestEntry(id=str(index), audio=path, duration=samples / 8000, label=label))
    >>> dataset = AudioClassificationDataset(entries, {"no": 0, "yes": 1}, sample_rate=8000)
    >>> batch = collate_audio([dataset[0], dataset[1]])
    >>> batch.audio.shape, batch.audio_lengths.tolist(), batch.targets.tolist(), batch.ids
    (torch.Size([2, 800]), [800, 400], [1, 0], ['0', '1'])
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cadence.data.audio import load_audio
from cadence.data.manifest import ManifestEntry
from cadence.errors import DataError

__all__ = ["AudioBatch", "AudioClassificationDataset", "PackedStrings", "collate_audio"]

logger = logging.getLogger("cadence")


class PackedStrings:
    """An immutable sequence of str stored as one UTF-8 byte buffer plus offsets."""

    def __init__(self, strings: Sequence[str]) -> None:
        encoded = [string.encode("utf-8") for string in strings]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(item) for item in encoded], out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> str:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} strings")
        index %= len(self)
        return self._buffer[self._offsets[index] : self._offsets[index + 1]].tobytes().decode("utf-8")


@dataclasses.dataclass
class AudioBatch:
    """A padded batch: ``audio [B, T]`` float32 zero-padded, ``audio_lengths [B]`` int64 samples,
    ``targets [B]`` int64 class indices, ``ids`` the utterance ids in batch order."""

    audio: torch.Tensor
    audio_lengths: torch.Tensor
    targets: torch.Tensor
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> AudioBatch:
        return AudioBatch(
            audio=self.audio.to(device, non_blocking=non_blocking),
            audio_lengths=self.audio_lengths.to(device, non_blocking=non_blocking),
            targets=self.targets.to(device, non_blocking=non_blocking),
            ids=self.ids,
        )

    def pin_memory(self) -> AudioBatch:
        """Called by ``DataLoader(pin_memory=True)``."""
        return AudioBatch(self.audio.pin_memory(), self.audio_lengths.pin_memory(), self.targets.pin_memory(), self.ids)


def collate_audio(items: Sequence[tuple[torch.Tensor, int, str]]) -> AudioBatch:
    """Pad ``(waveform [samples], label_index, id)`` items into an :class:`AudioBatch`."""
    if not items:
        raise ValueError("collate_audio needs at least one item")
    lengths = torch.tensor([waveform.shape[0] for waveform, _, _ in items], dtype=torch.int64)
    audio = torch.zeros(len(items), int(lengths.max()), dtype=torch.float32)
    for row, (waveform, _, _) in enumerate(items):
        audio[row, : waveform.shape[0]] = waveform
    targets = torch.tensor([label for _, label, _ in items], dtype=torch.int64)
    return AudioBatch(audio=audio, audio_lengths=lengths, targets=targets, ids=[item_id for _, _, item_id in items])


class AudioClassificationDataset(Dataset):
    """Utterances with one class label each; ``dataset[i] -> (waveform [samples], label_index, id)``.

    ``label_to_index`` maps every label in ``entries`` to its class index; an entry without a
    label, or with one not in the map, raises :class:`DataError`.

    With ``preload=True`` every waveform is read once, here, into one float32 tensor (plus
    offsets), so later epochs do no disk I/O and forked workers share the memory. That suits
    corpora that fit in RAM (FSDD: about 40 MB); use ``preload=False`` for larger ones.
    ``durations`` (seconds, from the manifest) is kept for length-aware samplers.
    """

    def __init__(
        self,
        entries: Sequence[ManifestEntry],
        label_to_index: Mapping[str, int],
        sample_rate: int,
        preload: bool = True,
    ) -> None:
        if not entries:
            raise DataError("AudioClassificationDataset got no entries; check that the manifest lists utterances")
        self.sample_rate = sample_rate
        self.ids = PackedStrings([entry.id for entry in entries])
        self.paths = PackedStrings([os.fspath(entry.audio) for entry in entries])
        # NaN offset: the whole file; otherwise the segment [offset, offset + duration).
        self.offsets = np.array(
            [np.nan if entry.offset is None else entry.offset for entry in entries], dtype=np.float64
        )
        self.durations = np.array([entry.duration for entry in entries], dtype=np.float64)
        self.labels = np.array([self._label_index(entry, label_to_index) for entry in entries], dtype=np.int64)
        self._waveforms: torch.Tensor | None = None
        self._waveform_offsets: np.ndarray | None = None
        if preload:
            self._preload()

    @staticmethod
    def _label_index(entry: ManifestEntry, label_to_index: Mapping[str, int]) -> int:
        if entry.label is None:
            raise DataError(
                f"utterance {entry.id!r} ({entry.audio}) has no 'label'; a classification manifest needs one per line"
            )
        if entry.label not in label_to_index:
            known = ", ".join(sorted(label_to_index)[:20])
            raise DataError(
                f"utterance {entry.id!r} ({entry.audio}) has label {entry.label!r}, which is not a known class "
                f"({known}); regenerate the label list from the training manifest"
            )
        return label_to_index[entry.label]

    def _load(self, index: int) -> torch.Tensor:
        offset = float(self.offsets[index])
        if np.isnan(offset):
            return load_audio(self.paths[index], self.sample_rate)
        return load_audio(self.paths[index], self.sample_rate, offset=offset, duration=float(self.durations[index]))

    def _preload(self) -> None:
        started = time.perf_counter()
        waveforms = [self._load(index) for index in range(len(self))]
        self._waveform_offsets = np.zeros(len(waveforms) + 1, dtype=np.int64)
        np.cumsum([waveform.shape[0] for waveform in waveforms], out=self._waveform_offsets[1:])
        self._waveforms = torch.cat(waveforms)
        logger.info(
            "preloaded %d utterances (%.1f MB of audio) in %.1f s",
            len(self),
            self._waveforms.numel() * 4 / 1e6,
            time.perf_counter() - started,
        )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        if self._waveforms is not None:
            start, end = self._waveform_offsets[index], self._waveform_offsets[index + 1]
            # A copy, not a view: a view would pin (and, across processes, ship) the whole buffer.
            waveform = self._waveforms[start:end].clone()
        else:
            waveform = self._load(index)
        return waveform, int(self.labels[index]), self.ids[index]
