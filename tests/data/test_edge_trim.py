"""Edge trimming (``edge_trim``): the quiet starts and ends of each stretch of speech silenced,
each stretch measured from its own peak; real FSDD takes trimmed like the corpus's cut ones. The
rules every distortion shares (length, padding, p, eval mode, draws) are in test_distortions.py."""

from __future__ import annotations

import soundfile
import torch

from cadence.data.distortions import EdgeTrim
from cadence.data.distortions.edge_trim import frame_levels_db, speech_stretches

SAMPLE_RATE = 8000


def spoken(*levels: float, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """A constant-level signal of 10 ms pieces: ``levels`` in dB relative to 1, None for silence."""
    return torch.cat([torch.zeros(sample_rate // 100) if level is None else torch.full((sample_rate // 100,), 10 ** (level / 20))
                      for level in levels])


def test_edge_trim_silences_the_edges_below_the_drawn_depth_of_each_word() -> None:
    """Two words, each a loud body with a head and a tail 20 dB down (the second word 12 dB
    quieter as a whole): a 15 dB threshold silences each word's head and tail, measured from
    that word's own peak; a 30 dB threshold leaves them."""
    word = [-20.0] * 3 + [0.0] * 10 + [-20.0] * 4
    quiet_word = [level - 12 for level in word]
    waveform = spoken(None, *word, None, None, None, None, None, *quiet_word, None)[None]
    length = torch.tensor([waveform.shape[1]])
    trimmed, _ = EdgeTrim(p=1.0, edge_p=1.0, threshold_db=(15.0, 15.0))(waveform, length)
    kept = frame_levels_db(trimmed, 80)[0] > -200
    expected = [False] * 4 + [True] * 10 + [False] * 4 + [False] * 5 + [False] * 3 + [True] * 10 + [False] * 5
    assert kept.tolist() == expected
    untouched, _ = EdgeTrim(p=1.0, edge_p=1.0, threshold_db=(30.0, 30.0))(waveform, length)
    assert torch.equal(untouched, waveform)
    assert torch.equal(EdgeTrim(p=1.0, edge_p=0.0)(waveform, length)[0], waveform)


def test_edge_trim_joins_a_word_across_a_short_pause_and_splits_words_at_a_long_one() -> None:
    """A /t/ release after a 20 ms closure belongs to its word (cut as its tail at 15 dB); with
    pauses counted from 10 ms on, the release is a word of its own, at its own peak, and kept."""
    eight = spoken(None, *[0.0] * 10, None, None, *[-20.0] * 3, None)[None]
    length = torch.tensor([eight.shape[1]])
    levels = frame_levels_db(eight, 80)[0].tolist()
    assert speech_stretches(levels, silence_db=50, pause_frames=4) == [(1, 15)]
    assert speech_stretches(levels, silence_db=50, pause_frames=1) == [(1, 10), (13, 15)]
    joined, _ = EdgeTrim(p=1.0, edge_p=1.0, threshold_db=(15.0, 15.0), min_pause_s=0.04)(eight, length)
    assert joined[0, 13 * 80:].eq(0).all() and joined[0, 80:11 * 80].ne(0).all()
    split, _ = EdgeTrim(p=1.0, edge_p=1.0, threshold_db=(15.0, 15.0), min_pause_s=0.01)(eight, length)
    assert torch.equal(split, eight)


def test_edge_trim_cuts_a_complete_fsdd_take_of_eight_to_the_length_of_a_cut_one(fsdd_root) -> None:
    """nicolas's test takes of "eight" (0-4) end at the vowel, his training takes (10-49) keep
    the /t/; trimmed at 15 dB, a training take keeps about as much as a test take has."""
    def read(take: int) -> torch.Tensor:
        samples, _ = soundfile.read(fsdd_root / "recordings" / f"8_nicolas_{take}.wav", dtype="float32")
        return torch.from_numpy(samples)[None]

    def voiced_seconds(waveform: torch.Tensor) -> float:
        return float(waveform.ne(0).sum()) / SAMPLE_RATE

    complete, cut = read(20), read(0)
    trimmed, _ = EdgeTrim(p=1.0, edge_p=1.0, threshold_db=(15.0, 15.0))(complete, torch.tensor([complete.shape[1]]))
    assert voiced_seconds(complete) > 0.35  # 0.38 s
    assert 0.15 < voiced_seconds(cut) < 0.25 and 0.15 < voiced_seconds(trimmed) < 0.25  # 0.21 s and 0.20 s
