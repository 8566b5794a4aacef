"""What the Trainer reports: learning rates, one-line metric summaries, and ``results.json``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cadence.optim import learning_rates

if TYPE_CHECKING:
    from cadence.trainer import Trainer

__all__ = ["format_metrics", "learning_rate_logs", "results_of"]


def learning_rate_logs(optimizer) -> dict[str, float]:
    """``train/lr``, or ``train/lr/group<i>`` when parameter groups differ."""
    rates = list(learning_rates(optimizer))
    if len(set(rates)) == 1:
        return {"train/lr": rates[0]}
    return {f"train/lr/group{index}": rate for index, rate in enumerate(rates)}


def format_metrics(values: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}" for name, value in values.items())


def results_of(trainer: Trainer, test_metrics: dict[str, float], wall_time: float) -> dict[str, Any]:
    """The summary ``fit`` returns (and ``cadence train`` writes as ``results.json``)."""
    state = trainer.state
    best = next((entry for entry in state.history if entry["epoch"] == state.best_epoch), {})
    final = None
    if trainer.checkpointer is not None:
        final = str(trainer.checkpointer.directory / (state.best_checkpoint or trainer.checkpoint_name()))
    return {
        "monitor": trainer.monitor,
        "mode": trainer.mode,
        "best_epoch": state.best_epoch,
        "best_value": state.best_value,
        "best_validation": {key: value for key, value in best.items() if key not in ("epoch", "step")},
        "test": test_metrics,
        "test_reports": trainer.test_reports,
        "epochs_completed": state.epoch,
        "global_step": state.global_step,
        "wall_time_s": round(wall_time, 3),
        "final_checkpoint": final,
        "history": state.history,
    }
