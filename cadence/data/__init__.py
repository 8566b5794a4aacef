"""Speech data: manifests, audio loading, features, datasets and batches."""

from cadence.data.audio import load_audio
from cadence.data.dataset import AudioBatch, AudioClassificationDataset, PackedStrings, collate_audio
from cadence.data.features import LogMel
from cadence.data.manifest import (
    ManifestEntry,
    manifest_sha256,
    read_labels,
    read_manifest,
    write_bytes_atomic,
    write_labels,
    write_manifest,
)

__all__ = [
    "AudioBatch",
    "AudioClassificationDataset",
    "LogMel",
    "ManifestEntry",
    "PackedStrings",
    "collate_audio",
    "load_audio",
    "manifest_sha256",
    "read_labels",
    "read_manifest",
    "write_bytes_atomic",
    "write_labels",
    "write_manifest",
]
