"""AudioDataset + BatchSampler + AudioDataLoader: batches, quarantine, resume by cursor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from cadence.data.audio import BadAudio
from cadence.data.dataset import AudioDataset, Batch
from cadence.data.loader import AudioDataLoader, Quarantine
from cadence.data.manifest import Manifest, ManifestEntry
from cadence.data.processor import AudioDataProcessor
from cadence.data.sampler import BatchingOptions, BatchSampler
from cadence.data.tokenizers import CharacterTokenizer
from cadence.errors import DataError

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def fsdd_entries(fsdd_root: Path) -> list[ManifestEntry]:
    paths = sorted((fsdd_root / "recordings").glob("*.wav"))[::30]  # 100 recordings, every digit and speaker
    return [
        ManifestEntry(id=path.stem, audio=path, duration=soundfile.info(path).duration,
                      label=WORDS[int(path.name[0])], speaker=path.stem.split("_")[1], text=WORDS[int(path.name[0])])
        for path in paths
    ]


def loader_for(entries, *, skip=True, quarantine=None, workers=0, preload=False, seed=0, **processor_options):
    processor = AudioDataProcessor(8000, label_to_index={word: i for i, word in enumerate(WORDS)}, **processor_options)
    dataset = AudioDataset(Manifest(entries), processor, preload=preload, skip_bad_audio=skip)
    sampler = BatchSampler(dataset.durations, BatchingOptions(max_frames=800, max_seqs=8), seed=seed)
    return AudioDataLoader(dataset, sampler, num_workers=workers, quarantine=quarantine)


def epoch_ids(loader) -> list[list[str]]:
    return [batch.ids for batch in loader]


def test_batches_are_padded_with_lengths_targets_and_speakers(fsdd_entries) -> None:
    batch = next(iter(loader_for(fsdd_entries[:10])))
    assert isinstance(batch, Batch) and batch.inputs.dtype == torch.float32
    assert batch.inputs.shape == (len(batch), int(batch.input_lengths.max()))
    for row, utterance_id in enumerate(batch.ids):
        entry = next(entry for entry in fsdd_entries if entry.id == utterance_id)
        length = int(batch.input_lengths[row])
        assert length == round(entry.duration * 8000)
        assert torch.all(batch.inputs[row, length:] == 0)
        assert batch.targets[row] == WORDS.index(entry.label) and batch.speakers[row] == entry.speaker


def test_text_targets_are_padded_token_ids(fsdd_entries) -> None:
    tokenizer = CharacterTokenizer.from_texts([entry.text for entry in fsdd_entries])
    processor = AudioDataProcessor(8000, target="text", tokenizer=tokenizer)
    dataset = AudioDataset(Manifest(fsdd_entries[:6]), processor)
    batch = dataset.collate([dataset[index] for index in range(6)])
    assert batch.targets.shape == (6, int(batch.target_lengths.max()))
    for row, utterance_id in enumerate(batch.ids):
        tokens = batch.targets[row, : batch.target_lengths[row]].tolist()
        assert tokenizer.decode(tokens) == WORDS[int(utterance_id[0])]


def test_preloaded_and_on_demand_reads_give_the_same_batches(fsdd_entries) -> None:
    on_demand = [batch.inputs for batch in loader_for(fsdd_entries[:20])]
    preloaded = [batch.inputs for batch in loader_for(fsdd_entries[:20], preload=True)]
    assert all(torch.equal(first, second) for first, second in zip(on_demand, preloaded, strict=True))


@pytest.mark.parametrize("preload", [False, True])
def test_training_skips_every_kind_of_bad_audio_into_the_quarantine(
    fsdd_entries, bad_audio_files, bad_audio_cases, tmp_path, preload
) -> None:
    bad = [ManifestEntry(id=case, audio=path, duration=bad_audio_cases[case][0]) for case, path in bad_audio_files.items()]
    entries = fsdd_entries + [ManifestEntry(**{**entry.__dict__, "label": "zero"}) for entry in bad]
    quarantine = Quarantine(tmp_path / "quarantine.jsonl", max_skip_rate=0.1)
    loader = loader_for(
        entries, quarantine=quarantine, workers=2, preload=preload, resample=False, mono="mix", min_duration=0.05
    )
    for _ in range(2):  # the second epoch meets the same files: counted again, written once
        seen, skipped_so_far = set(), []
        for batch in loader:
            seen.update(batch.ids)
            skipped_so_far.append(quarantine.skipped_in_epoch)
    expected_bad = {"zero_bytes": "unreadable", "header_only": "empty", "truncated": "truncated",
                    "wrong_rate": "wrong_rate", "all_zeros": "silent", "too_short": "too_short"}
    assert seen == {entry.id for entry in fsdd_entries} | {"good", "stereo"}
    records = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert {record["id"]: record["reason"] for record in records} == expected_bad
    assert all(record["audio"].endswith(f"{record['id']}.wav") and record["message"] for record in records)
    assert skipped_so_far[-1] == len(expected_bad)  # this epoch's count, at its last batch


def test_too_many_skips_stop_training_with_a_clear_error(fsdd_entries, bad_audio_files, tmp_path) -> None:
    bad = [ManifestEntry(id=case, audio=bad_audio_files[case], duration=0.5, label="one")
           for case in ("zero_bytes", "header_only", "all_zeros")]
    quarantine = Quarantine(tmp_path / "quarantine.jsonl", max_skip_rate=0.01)  # 1% of 103: one skip allowed
    loader = loader_for(fsdd_entries + bad, quarantine=quarantine)
    with pytest.raises(DataError, match=r"of 103 utterances planned this epoch had unusable audio, more than the allowed 1\.00%.*quarantine\.jsonl.*cadence data check"):
        epoch_ids(loader)
    assert len((tmp_path / "quarantine.jsonl").read_text().splitlines()) >= 2  # what was written stays


@pytest.mark.parametrize("workers", [0, 2])
def test_evaluation_fails_on_bad_audio_naming_the_file(fsdd_entries, bad_audio_files, workers) -> None:
    entries = fsdd_entries[:5] + [ManifestEntry(id="broken", audio=bad_audio_files["zero_bytes"], duration=0.5, label="one")]
    with pytest.raises(Exception, match=r"zero_bytes\.wav: unreadable") as raised:
        epoch_ids(loader_for(entries, skip=False, workers=workers))
    assert isinstance(raised.value, (BadAudio, RuntimeError))  # workers re-raise with the worker's message


def test_preloading_evaluation_data_fails_at_once(bad_audio_files) -> None:
    entries = [ManifestEntry(id="silence", audio=bad_audio_files["all_zeros"], duration=0.5, label="one")]
    with pytest.raises(BadAudio, match=r"all_zeros\.wav: silent"):
        loader_for(entries, skip=False, preload=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_resuming_mid_epoch_continues_with_exactly_the_remaining_batches(fsdd_entries, workers) -> None:
    uninterrupted = loader_for(fsdd_entries, workers=workers, seed=4)
    uninterrupted.set_epoch(1)
    expected = epoch_ids(uninterrupted)

    interrupted = loader_for(fsdd_entries, workers=workers, seed=4)
    interrupted.set_epoch(1)
    iterator = iter(interrupted)
    consumed = [next(iterator).ids for _ in range(3)]
    state = interrupted.state_dict()
    assert state["epoch"] == 1 and state["cursor"] == 3  # what the loop consumed, not what workers prefetched

    resumed = loader_for(fsdd_entries, workers=workers, seed=4)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # what the Trainer does at the start of the epoch: keeps the cursor
    assert len(resumed) == len(expected) - 3
    assert consumed + epoch_ids(resumed) == expected
    assert resumed.state_dict()["epoch"] == 2


def test_resuming_loads_no_skipped_data(fsdd_entries, monkeypatch) -> None:
    loader = loader_for(fsdd_entries, seed=4)
    iterator = iter(loader)
    skipped_batches = [next(iterator) for _ in range(5)]
    state = loader.state_dict()

    loaded: list[str] = []
    original = AudioDataProcessor.load_audio
    monkeypatch.setattr(
        AudioDataProcessor, "load_audio", lambda self, path, *args, **options: loaded.append(path) or original(self, path, *args, **options)
    )
    resumed = loader_for(fsdd_entries, seed=4)
    resumed.load_state_dict(state)
    remaining = epoch_ids(resumed)
    assert len(loaded) == sum(len(ids) for ids in remaining)
    assert not {Path(path).stem for path in loaded} & {id for batch in skipped_batches for id in batch.ids}


def test_each_epoch_has_its_own_plan_and_a_complete_pass_moves_on(fsdd_entries) -> None:
    loader = loader_for(fsdd_entries)
    first, second = epoch_ids(loader), epoch_ids(loader)
    assert sorted(sum(first, [])) == sorted(sum(second, [])) and first != second
    assert loader.state_dict() == {"epoch": 2, "cursor": 0, "batches": len(loader), "skipped_in_epoch": 0,
                                  "world_size": 1, "global_batches": len(loader)}


def test_a_saved_position_that_does_not_fit_the_plan_is_refused(fsdd_entries) -> None:
    state = {**loader_for(fsdd_entries).state_dict(), "cursor": 1}  # inside an epoch
    with pytest.raises(DataError, match=r"does not fit this run's plan.*batching options, seed or number of processes"):
        loader_for(fsdd_entries[:50]).load_state_dict(state)  # another data set: another number of batches
    # At an epoch's start any plan fits: a curriculum sets the epoch's options only when it starts.
    other = loader_for(fsdd_entries[:50])
    other.load_state_dict({**state, "cursor": 0})
    assert (other.epoch, other.cursor) == (state["epoch"], 0)
    with pytest.raises(DataError, match="does not fit"):
        loader_for(fsdd_entries).load_state_dict({**state, "cursor": state["batches"] + 1})


def test_an_evaluation_pass_is_always_whole(fsdd_entries) -> None:
    evaluation = loader_for(fsdd_entries[:40], skip=False)
    evaluation.resumable = False
    whole = epoch_ids(evaluation)
    next(iter(evaluation))  # a pass cut short (an exception, a peek) ...
    assert epoch_ids(evaluation) == whole  # ... does not shorten the next one


def test_batches_move_to_a_device_whole() -> None:
    batch = Batch(torch.zeros(2, 5), torch.tensor([5, 3]), torch.tensor([0, 1]), None, ["a", "b"], ["s", "t"])
    moved = batch.to("cpu")
    assert moved.ids == ["a", "b"] and moved.target_lengths is None and torch.equal(moved.inputs, batch.inputs)


@pytest.mark.parametrize("preload", [False, True])
def test_chunked_plans_load_exactly_the_planned_segments(fsdd_entries, preload) -> None:
    processor = AudioDataProcessor(8000, label_to_index={word: i for i, word in enumerate(WORDS)})
    dataset = AudioDataset(Manifest(fsdd_entries[:20]), processor, preload=preload)
    sampler = BatchSampler(dataset.durations, BatchingOptions(max_frames=800, chunk_size=0.2), seed=1)
    plan = sampler.plan()
    batch = next(iter(AudioDataLoader(dataset, sampler)))
    assert batch.input_lengths.tolist() == [1600] * len(batch)  # 0.2 s at 8 kHz
    for row, (index, start, _) in enumerate(plan.batch(0)):
        whole = dataset[index].inputs
        begin = round(start * 8000)
        assert torch.equal(batch.inputs[row], whole[begin : begin + 1600])


def test_a_line_without_the_target_field_is_named(fsdd_entries) -> None:
    entries = fsdd_entries[:3] + [ManifestEntry(id="unlabelled", audio=fsdd_entries[0].audio, duration=0.3)]
    processor = AudioDataProcessor(8000, label_to_index={word: i for i, word in enumerate(WORDS)})
    with pytest.raises(DataError, match=r"utterance 'unlabelled' \(.*\) has no 'label'; every line needs one"):
        AudioDataset(Manifest(entries), processor)
    tokenizer = CharacterTokenizer(["o", "n", "e"])
    spoken_zero = ManifestEntry(**{**fsdd_entries[0].__dict__, "text": "zero"})
    with pytest.raises(DataError, match=r"2 characters .* not in the char tokenizer: 'z' 1x, .*; 'r' 1x"):
        AudioDataset(Manifest([spoken_zero]), AudioDataProcessor(8000, target="text", tokenizer=tokenizer))


def test_chunks_of_a_good_recording_are_not_judged_as_whole_utterances(tmp_path) -> None:
    # 1 s of digital silence, then a tone: a pause is a fine chunk, and so is a short tail.
    samples = np.concatenate([np.zeros(8000), 0.3 * np.sin(np.arange(4000) / 3)]).astype(np.float32)
    soundfile.write(tmp_path / "pause.wav", samples, 8000)
    entry = ManifestEntry(id="pause", audio=tmp_path / "pause.wav", duration=1.5, label="one")
    for preload in (False, True):
        loader = loader_for([entry], preload=preload, min_duration=0.5, quarantine=Quarantine(None, max_skip_rate=0.0))
        loader.batch_sampler.options = BatchingOptions(max_frames=100_000, chunk_size=0.6, chunk_step=0.6)
        lengths = sorted(length for batch in loader for length in batch.input_lengths.tolist())
        assert lengths == [2400, 4800, 4800], preload


def test_global_statistics_pass_over_unusable_files(fsdd_entries, bad_audio_files) -> None:
    from cadence.data.features import LogMel
    from cadence.data.normalization import FeatureNormalization
    from cadence.data.pipeline import FeaturePipeline, compute_statistics

    broken = ManifestEntry(id="broken", audio=bad_audio_files["zero_bytes"], duration=0.5, label="one")
    loader = loader_for(fsdd_entries[:5] + [broken], quarantine=Quarantine(None, max_skip_rate=1.0))
    loader.batch_sampler.options = BatchingOptions(max_seqs=1)  # the broken file alone in its batch
    pipeline = FeaturePipeline([LogMel(), FeatureNormalization("global")])
    compute_statistics(pipeline, loader.statistics_pass(), "cpu")
    frames = sum(int(LogMel().frame_lengths(torch.tensor([round(entry.duration * 8000)]))) for entry in fsdd_entries[:5])
    assert int(pipeline.stages[1].frames) == frames


def test_loader_workers_leave_ctrl_c_to_the_main_process(fsdd_entries) -> None:
    import os
    import signal
    import time

    loader = loader_for(fsdd_entries[:40], workers=2)
    iterator = iter(loader)
    # Batches go to the workers in turn: once each has delivered one, each has run its
    # worker_init_fn (a worker still starting up would die of the signal before it, whatever cadence does).
    first = [next(iterator), next(iterator)]
    workers = loader.loader._iterator._workers  # persistent workers, as in training
    for worker in workers:
        os.kill(worker.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches every process of the group
    time.sleep(0.2)
    rest = list(iterator)  # no "DataLoader worker exited unexpectedly"
    assert all(worker.is_alive() for worker in workers)
    assert sum(len(batch) for batch in first + rest) == 40


def ranked_loader(entries, rank: int, world_size: int) -> AudioDataLoader:
    processor = AudioDataProcessor(8000, label_to_index={word: i for i, word in enumerate(WORDS)})
    dataset = AudioDataset(Manifest(entries), processor)
    sampler = BatchSampler(dataset.durations, BatchingOptions(max_frames=800, max_seqs=8), seed=0, rank=rank, world_size=world_size)
    return AudioDataLoader(dataset, sampler)


def test_a_position_saved_by_two_processes_continues_the_global_plan_on_one(fsdd_entries) -> None:
    entries = fsdd_entries[:40]
    whole = epoch_ids(ranked_loader(entries, 0, 1))  # the global plan, in order
    pair = [ranked_loader(entries, rank, 2) for rank in (0, 1)]
    for loader in pair:  # two batches each: the global plan's first four
        iterator = iter(loader)
        next(iterator), next(iterator)
    saved = pair[0].state_dict()
    assert saved["cursor"] == 2 and saved["world_size"] == 2
    alone = ranked_loader(entries, 0, 1)
    alone.load_state_dict(saved)
    assert alone.cursor == 4 and epoch_ids(alone) == whole[4:]
    # Four batches cannot be shared equally by three processes: refused, saying what to do.
    three = ranked_loader(entries, 0, 3)
    with pytest.raises(DataError, match="after 4 batches of epoch 1 on 2 processes, which 3 processes cannot share"):
        three.load_state_dict(saved)


def test_a_loader_left_inside_an_epoch_stops_its_workers_when_it_goes(fsdd_entries) -> None:
    """No reference cycle keeps a loader for the garbage collector, which would stop its workers
    at a random later moment, 5 s a worker."""
    import gc
    import multiprocessing

    before = set(multiprocessing.active_children())
    loader = loader_for(fsdd_entries[:40], workers=2)
    iterator = iter(loader)
    next(iterator)  # the workers have loaded ahead
    assert len(set(multiprocessing.active_children()) - before) == 2
    gc.disable()  # only reference counting may free it
    try:
        del iterator, loader
        assert set(multiprocessing.active_children()) - before == set()
    finally:
        gc.enable()


def test_a_plan_that_leaves_out_most_utterances_is_a_warning_and_a_few_is_not(fsdd_entries, caplog) -> None:
    dataset = AudioDataset(Manifest(fsdd_entries[:20]), AudioDataProcessor(8000, label_to_index={w: i for i, w in enumerate(WORDS)}))
    durations = sorted(dataset.durations)
    for chunk_size, warned in ((durations[2], False), (durations[15], True)):  # 2 left out, then 15 of 20
        caplog.clear()
        loader = AudioDataLoader(dataset, BatchSampler(dataset.durations, BatchingOptions(max_frames=8000, chunk_size=chunk_size)))
        next(iter(loader))
        warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
        assert bool(warnings) == warned, warnings
    assert warnings == ["train data: 15 segments of 20 utterances are left out of every epoch (15 shorter than chunk); check "
                        "chunk_size, min_duration and max_duration in the recipe's batching for this split against the audio's durations"]
