"""Corpora: locate, download, generate and write manifests for public speech datasets."""

from cadence.corpora.connected_digits import prepare_connected_digits
from cadence.corpora.fsdd import FSDD_TASKS, download_fsdd, find_fsdd, prepare_fsdd
from cadence.corpora.librispeech import LIBRISPEECH_SUBSETS, download_librispeech, prepare_librispeech

__all__ = [
    "FSDD_TASKS", "LIBRISPEECH_SUBSETS", "download_fsdd", "download_librispeech", "find_fsdd", "prepare_connected_digits",
    "prepare_fsdd", "prepare_librispeech",
]
