"""Worker-safe storage for per-utterance strings.

A DataLoader worker that touches a Python object (a list of dicts, a list of str) writes
to its reference count, which copies the memory page it lives on; with many workers and a
large manifest, each worker slowly copies the whole manifest. So per-utterance data lives
in numpy arrays and byte buffers, which workers only read.

    >>> names = PackedStrings(["a", "", "héllo"])
    >>> len(names), names[2], names[-1]
    (3, 'héllo', 'héllo')
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["PackedStrings", "PackedSequences"]


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

    def __iter__(self) -> Iterator[str]:
        return (self[index] for index in range(len(self)))


class PackedSequences:
    """An immutable sequence of int64 arrays (e.g. token ids) in one buffer plus offsets.

    >>> tokens = PackedSequences([[3, 1, 4], [], [1]])
    >>> tokens[0].tolist(), len(tokens[1]), tokens.lengths.tolist()
    ([3, 1, 4], 0, [3, 0, 1])
    """

    def __init__(self, sequences: Sequence[Sequence[int]]) -> None:
        self.lengths = np.array([len(sequence) for sequence in sequences], dtype=np.int64)
        self._offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self._offsets[1:])
        self._buffer = np.fromiter((value for sequence in sequences for value in sequence), dtype=np.int64, count=int(self._offsets[-1]))

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> np.ndarray:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} sequences")
        index %= len(self)
        return self._buffer[self._offsets[index] : self._offsets[index + 1]]
