"""Speech data: manifests, audio loading, datasets, batch plans, loaders and features."""

from cadence.data.audio import BAD_AUDIO_REASONS, BadAudio, load_audio
from cadence.data.dataset import AudioDataset, Batch, Example, Skipped
from cadence.data.features import MFCC, LogMel, Spectrogram
from cadence.data.inspect import build_manifest, check_manifest
from cadence.data.loader import AudioDataLoader, Quarantine
from cadence.data.manifest import (
    Manifest,
    ManifestEntry,
    manifest_sha256,
    read_labels,
    read_manifest,
    write_labels,
    write_manifest,
)
from cadence.data.normalization import FeatureNormalization
from cadence.data.packed import PackedSequences, PackedStrings
from cadence.data.pipeline import FeaturePipeline, compute_statistics
from cadence.data.processor import AudioDataProcessor
from cadence.data.sampler import BatchingOptions, BatchPlan, BatchSampler, build_plan
from cadence.data.spec_augment import SpecAugment
from cadence.data.tokenizers import (
    CharacterTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    TokenizerOptions,
    WordTokenizer,
    build_tokenizer,
    load_tokenizer,
    tokenizer_from_dict,
)

__all__ = [
    "BAD_AUDIO_REASONS",
    "MFCC",
    "AudioDataLoader",
    "AudioDataProcessor",
    "AudioDataset",
    "BadAudio",
    "Batch",
    "BatchPlan",
    "BatchSampler",
    "BatchingOptions",
    "CharacterTokenizer",
    "Example",
    "FeatureNormalization",
    "FeaturePipeline",
    "LogMel",
    "Manifest",
    "ManifestEntry",
    "PackedSequences",
    "PackedStrings",
    "Quarantine",
    "SentencePieceTokenizer",
    "Skipped",
    "SpecAugment",
    "Spectrogram",
    "Tokenizer",
    "TokenizerOptions",
    "WordTokenizer",
    "build_manifest",
    "build_plan",
    "build_tokenizer",
    "check_manifest",
    "compute_statistics",
    "load_audio",
    "load_tokenizer",
    "manifest_sha256",
    "read_labels",
    "read_manifest",
    "tokenizer_from_dict",
    "write_labels",
    "write_manifest",
]
