"""Data loading throughput, and on-device log-mel against librosa, measured side by side.

Part 1, the loader: one epoch of FSDD connected digits (train) through AudioDataLoader
(length-bucketed plan, audio decoded from disk each time, no preloading) with 0 workers, with
2 workers (first epoch, start-up included), and with 2 persistent workers (a later epoch);
utterances per second and seconds of audio per second of wall time ("x real time"). The
order of the contenders rotates over rounds; the median is reported.

Part 2, features: the same utterances turned into 40-band log-mel features by cadence's
LogMel on padded batches (on the CPU here, or the GPU when there is one) and by librosa one
utterance at a time (the usual CPU-side approach), alternating in each round.

    python benchmarks/loader.py [--utterances 2000] [--rounds 5]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cadence.corpora.connected_digits import prepare_connected_digits  # noqa: E402
from cadence.data.dataset import AudioDataset  # noqa: E402
from cadence.data.features import LogMel  # noqa: E402
from cadence.data.loader import AudioDataLoader  # noqa: E402
from cadence.data.manifest import Manifest  # noqa: E402
from cadence.data.processor import AudioDataProcessor  # noqa: E402
from cadence.data.sampler import BatchingOptions, BatchSampler  # noqa: E402
from cadence.runtime.device import resolve_device  # noqa: E402

SAMPLE_RATE = 8000


def loader_epoch(dataset: AudioDataset, workers: int, persistent: bool) -> float:
    """Seconds for one epoch: the first (worker start-up included), or with persistent
    workers the second, which is what every later training epoch costs."""
    sampler = BatchSampler(dataset.durations, BatchingOptions(max_frames=20000), seed=0)
    loader = AudioDataLoader(dataset, sampler, num_workers=workers, persistent_workers=persistent, pin_memory=False)
    for _ in range(2 if persistent else 1):
        started = time.perf_counter()
        for _ in loader:
            pass
    return time.perf_counter() - started


def on_device_log_mel(batches: list, device: torch.device) -> float:
    log_mel = LogMel(sample_rate=SAMPLE_RATE).to(device)
    started = time.perf_counter()
    with torch.no_grad():
        for inputs, lengths in batches:
            features, _ = log_mel(inputs.to(device), lengths.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()  # host/device sync: count the kernels, not just their launch
    return time.perf_counter() - started


def librosa_log_mel(waveforms: list[np.ndarray]) -> float:
    import librosa

    started = time.perf_counter()
    for waveform in waveforms:
        mel = librosa.feature.melspectrogram(
            y=waveform, sr=SAMPLE_RATE, n_fft=256, win_length=200, hop_length=80, n_mels=40,
            center=True, pad_mode="constant", power=2.0,
        )
        np.log(mel + 1e-6)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    manifest = Manifest.read(prepare_connected_digits()["train"])
    manifest = manifest.subset(range(min(arguments.utterances, len(manifest))))
    audio_seconds = float(manifest.durations.sum())
    dataset = AudioDataset(manifest, AudioDataProcessor(SAMPLE_RATE, target="none"))

    contenders = {"workers_0": (0, False), "workers_2_first_epoch": (2, False), "workers_2_persistent_next_epoch": (2, True)}
    epoch_times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_number in range(arguments.rounds):
        order = list(contenders)[round_number % 3 :] + list(contenders)[: round_number % 3]
        for name in order:
            epoch_times[name].append(loader_epoch(dataset, *contenders[name]))

    # The same utterances for both feature extractors: padded batches for cadence, arrays for librosa.
    plan_loader = AudioDataLoader(dataset, BatchSampler(dataset.durations, BatchingOptions(max_frames=20000), seed=0))
    batches = [(batch.inputs, batch.input_lengths) for batch in plan_loader]
    waveforms = [inputs[row, : lengths[row]].numpy() for inputs, lengths in batches for row in range(len(lengths))]
    device = resolve_device("auto")
    feature_times: dict[str, list[float]] = {"cadence_log_mel": [], "librosa_log_mel": []}
    for _ in range(arguments.rounds):
        feature_times["cadence_log_mel"].append(on_device_log_mel(batches, device))
        feature_times["librosa_log_mel"].append(librosa_log_mel(waveforms))

    def figures(seconds: list[float]) -> dict:
        median = statistics.median(seconds)
        return {"median_s": round(median, 3), "utterances_per_s": round(len(manifest) / median, 1),
                "x_real_time": round(audio_seconds / median, 1), "all_s": [round(value, 3) for value in seconds]}

    cadence_time = statistics.median(feature_times["cadence_log_mel"])
    librosa_time = statistics.median(feature_times["librosa_log_mel"])
    report = {
        "benchmark": "loader",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "utterances": len(manifest),
        "audio_hours": round(audio_seconds / 3600, 3),
        "loader": {name: figures(values) for name, values in epoch_times.items()},
        "features": {
            "device": str(device),
            **{name: figures(values) for name, values in feature_times.items()},
            "librosa_over_cadence_time": round(librosa_time / cadence_time, 2),
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
