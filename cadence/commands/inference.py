"""Using a trained model: evaluate a checkpoint on a split, transcribe audio files.

Both rebuild what they need from the checkpoint alone (its config, weights, tokenizer and
feature settings, such as global normalization statistics); ``evaluate_checkpoint`` also
rebuilds the recipe's data to read the split.

    cadence eval runs/asr-ds2/20261121-101500 --split test
    cadence transcribe runs/asr-ds2/20261121-101500 recording.wav
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cadence.checkpoint.candidates import use_first_that_fits
from cadence.data.audio import load_audio
from cadence.errors import CheckpointError, ConfigError
from cadence.config.build import build_data, build_metrics
from cadence.config.resolve import resolve
from cadence.evaluation import evaluate, write_records
from cadence.runtime.device import resolve_device
from cadence.registry import DATASETS
from cadence.config.rebuild import load, rebuilt_task, saved_config

__all__ = ["evaluate_checkpoint", "transcribe_files"]

SPLITS = ("train", "valid", "test")


def evaluate_checkpoint(path: str | Path, split: str = "test", device: str = "auto", trust_code: bool = False) -> dict[str, Any]:
    """The loss and the recipe's metrics of a checkpoint (or an experiment's best) on one split.

    Hypotheses go to ``EXP_DIR/hypotheses/eval-<checkpoint>-<split>.jsonl``, beside (never over)
    those the training wrote. ``trust_code``: see :func:`cadence.config.rebuild.import_saved_modules`.
    """
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")

    def rebuild(checkpoint: Path, state: dict[str, Any], _: dict[str, Any]) -> tuple[Any, Any, list]:
        config = saved_config(state, checkpoint, trust_code)
        if "preload" in DATASETS.schema(config.data.name).model_fields:
            config.data.model_extra["preload"] = False  # one split is read, once; results do not depend on it
        recipe = resolve(config)
        data = build_data(recipe, checkpoint.parent.parent / "data")
        loader = {"train": data.train, "valid": data.valid, "test": data.test}[split]
        if loader is None:
            raise ConfigError(f"the recipe of {checkpoint} has no {split} data")
        facts = {**data.facts, "mode": recipe.trainer["mode"]}
        saved_tokenizer = state.get("tokenizer")
        if saved_tokenizer is not None and saved_tokenizer != facts["tokenizer"].to_dict():
            raise CheckpointError(
                f"{checkpoint}: the data now gives a tokenizer other than the one the model was trained with "
                "(the training transcripts changed?); evaluate on the data it was trained with"
            )
        # Built from the data's facts, without the data: feature statistics come from the checkpoint.
        return rebuilt_task(recipe, state, facts), loader, build_metrics(recipe, facts)

    checkpoint, (task, loader, metrics) = use_first_that_fits(path, rebuild, best=True)
    evaluation = evaluate(task, loader, split, metrics, resolve_device(device))
    if evaluation.records:
        write_records(checkpoint.parent.parent / "hypotheses" / f"eval-{checkpoint.name}-{split}.jsonl", evaluation.records)
    return {"checkpoint": str(checkpoint), "split": split, "metrics": evaluation.metrics}


def feature_sample_rate(task: torch.nn.Module) -> int:
    """The rate the task's feature module expects (from its settings, saved in the checkpoint)."""
    features = getattr(task, "features", None)
    for module in features.modules() if features is not None else ():
        rate = getattr(module, "sample_rate", None)
        if isinstance(rate, int):
            return rate
    rate = (getattr(task, "config", None) or {}).get("data", {}).get("sample_rate")
    if rate is None:
        raise ConfigError("this model's sample rate is unknown (no feature module says it); resample the audio yourself")
    return int(rate)


@torch.no_grad()
def transcribe_files(
    path: str | Path, audio_files: list[str], device: str = "cpu", batch_size: int = 16, trust_code: bool = False,
) -> list[dict[str, str]]:
    """``[{"audio": file, "text": hypothesis}]`` for each file, with the checkpoint's decoding settings."""
    task = load(path, device=device, trust_code=trust_code)
    if not callable(getattr(task, "transcribe", None)):
        raise ConfigError(f"{path}: its task ({type(task).__name__}) does not transcribe; it is not a speech recognizer")
    sample_rate = feature_sample_rate(task)
    results = []
    for start in range(0, len(audio_files), batch_size):
        files = audio_files[start:start + batch_size]
        # Files at another rate are resampled (logged once per rate); bad files raise BadAudio naming them.
        waveforms = [load_audio(file, sample_rate) for file in files]
        lengths = torch.tensor([waveform.shape[-1] for waveform in waveforms])
        padded = torch.zeros(len(waveforms), int(lengths.max()))
        for row, waveform in enumerate(waveforms):
            padded[row, : waveform.shape[-1]] = waveform
        texts = task.transcribe(padded.to(device), lengths.to(device))
        results.extend({"audio": file, "text": text} for file, text in zip(files, texts))
    return results
