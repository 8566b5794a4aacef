from __future__ import annotations

from pathlib import Path

import pytest
import soundfile
import torch
from torch.utils.data import DataLoader

from cadence.data import dataset as dataset_module
from cadence.data.dataset import AudioBatch, AudioClassificationDataset, PackedStrings, collate_audio
from cadence.data.manifest import ManifestEntry
from cadence.errors import DataError

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGITS = {word: index for index, word in enumerate(WORDS)}


def digit_entries(paths: list[Path]) -> list[ManifestEntry]:
    return [
        ManifestEntry(
            id=path.stem,
            audio=path,
            duration=soundfile.info(path).duration,
            label=WORDS[int(path.name[0])],
            speaker=path.stem.split("_")[1],
        )
        for path in paths
    ]


def test_packed_strings_behave_like_a_sequence() -> None:
    strings = ["a", "", "héllo", "0_george_0"]
    packed = PackedStrings(strings)
    assert len(packed) == 4 and [packed[index] for index in range(4)] == strings
    assert packed[-1] == "0_george_0"
    with pytest.raises(IndexError):
        packed[4]


def test_items_are_waveform_label_index_and_id(fsdd_files: list[Path]) -> None:
    entries = digit_entries(fsdd_files)
    preloaded = AudioClassificationDataset(entries, DIGITS, sample_rate=8000)
    from_disk = AudioClassificationDataset(entries, DIGITS, sample_rate=8000, preload=False)
    assert len(preloaded) == len(from_disk) == len(entries)
    for index, entry in enumerate(entries):
        waveform, label, item_id = preloaded[index]
        assert waveform.dtype == torch.float32 and waveform.shape == (soundfile.info(entry.audio).frames,)
        assert label == DIGITS[entry.label] and item_id == entry.id
        disk_waveform, disk_label, disk_id = from_disk[index]
        assert torch.equal(waveform, disk_waveform) and (label, item_id) == (disk_label, disk_id)


def test_preloaded_dataset_reads_no_file_after_construction(
    fsdd_files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = AudioClassificationDataset(digit_entries(fsdd_files), DIGITS, sample_rate=8000)

    def no_disk(*args, **kwargs):
        raise AssertionError("a preloaded dataset must not read audio files")

    monkeypatch.setattr(dataset_module, "load_audio", no_disk)
    waveform, _, _ = dataset[2]
    waveform.zero_()  # items are copies: changing one leaves the cache intact
    assert dataset[2][0].abs().sum() > 0


def test_collate_pads_with_zeros_and_keeps_lengths(fsdd_files: list[Path]) -> None:
    dataset = AudioClassificationDataset(digit_entries(fsdd_files[:3]), DIGITS, sample_rate=8000)
    items = [dataset[index] for index in range(3)]
    batch = collate_audio(items)

    lengths = [waveform.shape[0] for waveform, _, _ in items]
    assert isinstance(batch, AudioBatch) and len(batch) == 3
    assert batch.audio.shape == (3, max(lengths)) and batch.audio.dtype == torch.float32
    assert batch.audio_lengths.dtype == torch.int64 and batch.audio_lengths.tolist() == lengths
    assert batch.targets.dtype == torch.int64 and batch.targets.tolist() == [label for _, label, _ in items]
    assert batch.ids == [item_id for _, _, item_id in items]
    for row, (waveform, _, _) in enumerate(items):
        assert torch.equal(batch.audio[row, : lengths[row]], waveform)
        assert torch.all(batch.audio[row, lengths[row] :] == 0)
    moved = batch.to("cpu")
    assert torch.equal(moved.audio, batch.audio) and moved.ids == batch.ids


def test_worker_processes_give_the_same_batches(fsdd_files: list[Path]) -> None:
    dataset = AudioClassificationDataset(digit_entries(fsdd_files), DIGITS, sample_rate=8000)
    in_process = list(DataLoader(dataset, batch_size=4, collate_fn=collate_audio))
    in_workers = list(DataLoader(dataset, batch_size=4, collate_fn=collate_audio, num_workers=2))
    assert [batch.ids for batch in in_workers] == [batch.ids for batch in in_process]
    for first, second in zip(in_process, in_workers):
        assert torch.equal(first.audio, second.audio) and torch.equal(first.targets, second.targets)


def test_missing_or_unknown_labels_are_data_errors(fsdd_files: list[Path]) -> None:
    entry = digit_entries(fsdd_files[:1])[0]
    with pytest.raises(DataError, match=r"'0_george_0' .* has label 'zero', which is not a known class"):
        AudioClassificationDataset([entry], {"one": 0}, sample_rate=8000)
    unlabelled = ManifestEntry(id="x", audio=entry.audio, duration=entry.duration)
    with pytest.raises(DataError, match=r"'x' .*has no 'label'"):
        AudioClassificationDataset([unlabelled], DIGITS, sample_rate=8000)


def test_segments_with_offset_are_cut(fsdd_files: list[Path]) -> None:
    path = fsdd_files[0]
    entry = ManifestEntry(id="cut", audio=path, duration=0.1, offset=0.05, label="zero")
    waveform, _, _ = AudioClassificationDataset([entry], DIGITS, sample_rate=8000)[0]
    whole, _ = soundfile.read(path, dtype="float32")
    assert torch.equal(waveform, torch.from_numpy(whole[400:1200]))
