"""Corpora: locate, download and write manifests for public speech datasets."""

from cadence.corpora.fsdd import FSDD_TASKS, download_fsdd, find_fsdd, prepare_fsdd

__all__ = ["FSDD_TASKS", "download_fsdd", "find_fsdd", "prepare_fsdd"]
