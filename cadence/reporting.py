"""What the Trainer reports: the epoch's running loss sums, learning rates, one-line metric
summaries, and the results ``fit`` returns (``results.json``)."""

from __future__ import annotations

from typing import Any

import torch

from cadence.optim import learning_rates
from cadence.runtime.distributed import reduce_sum
from cadence.state import TrainState

__all__ = ["EpochSums", "format_metrics", "learning_rate_logs", "results_summary"]


class EpochSums:
    """The running epoch's loss sums, kept on the device so that a step never waits for it.

    ``loss`` and each named loss (``loss_<name>``) sum over the epoch; ``window_loss`` over
    the steps since the last log line. Saved in checkpoints, so that a resumed epoch reports
    the same mean loss. With several processes, the means are over every process's batches:
    reading them is a collective (each process reads them at the same points).

    >>> sums = EpochSums()
    >>> sums.add(torch.tensor(2.0), {"ctc": torch.tensor(1.0)}); sums.add(torch.tensor(4.0), {})
    >>> sums.means("train")
    {'train/loss': 3.0, 'train/loss_ctc': 0.5}
    """

    def __init__(self) -> None:
        self.sums = {"loss": torch.zeros(()), "window_loss": torch.zeros(()), "batches": torch.zeros((), dtype=torch.int64),
                     "window_batches": torch.zeros((), dtype=torch.int64)}

    def to(self, device: torch.device) -> None:
        self.sums = {name: value.to(device) for name, value in self.sums.items()}

    def add(self, loss: torch.Tensor, losses: dict[str, torch.Tensor]) -> None:
        loss = loss.detach()
        self.sums["loss"] += loss
        self.sums["window_loss"] += loss
        self.sums["batches"] += 1
        self.sums["window_batches"] += 1
        for name, value in losses.items():
            # Named parts (e.g. ctc and attention) get epoch means of their own: train/loss_<name>.
            part = f"loss_{name}"
            self.sums[part] = self.sums.get(part, torch.zeros((), device=loss.device)) + value.detach()

    def window_mean(self, steps: int) -> float:
        """The mean loss of the batches since the last call (``steps`` of them when a checkpoint
        from before they were counted was restored); starts the next window. ``.item()`` waits
        for the device."""
        counts = self.sums["window_batches"].to(self.sums["loss"].dtype)
        total, counted = reduce_sum(torch.stack([self.sums["window_loss"], counts])).tolist()
        mean = total / (counted if counted > 0 else steps)
        self.sums["window_loss"].zero_()
        self.sums["window_batches"].zero_()
        return mean

    def means(self, split: str) -> dict[str, float]:
        """``<split>/loss`` and ``<split>/loss_<name>`` over the epoch. ``.item()`` waits for the device."""
        names = ["loss", *sorted(name for name in self.sums if name.startswith("loss_"))]
        # Every process holds the same named losses (the task's), so the stacks line up.
        counts = self.sums["batches"].to(self.sums["loss"].dtype)
        totals = reduce_sum(torch.stack([*(self.sums[name] for name in names), counts])).tolist()
        batches = max(totals[-1], 1)
        return {f"{split}/{name}": total / batches for name, total in zip(names, totals)}

    def loss_finite(self) -> bool:
        """Whether every loss added since the last reset was finite (a NaN or an infinity stays in
        the sum): a check that costs nothing per step. ``bool()`` waits for the device."""
        return bool(torch.isfinite(reduce_sum(self.sums["loss"])))

    def reset(self) -> None:
        """Zero the sums for the next epoch; the named parts start again with its first batch (a
        stage may train other losses: the last one's would otherwise be reported as 0)."""
        self.sums = {name: value.zero_() for name, value in self.sums.items() if not name.startswith("loss_")}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: value.detach().cpu() for name, value in self.sums.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        device = self.sums["loss"].device
        for name, value in state.items():
            self.sums[name] = value.to(device)
        if "window_batches" not in state:  # saved before batches were counted: window_mean takes the steps
            self.sums["window_batches"] = torch.zeros((), dtype=torch.int64, device=device)


def learning_rate_logs(optimizer) -> dict[str, float]:
    """``train/lr``, or ``train/lr/group<i>`` when parameter groups differ."""
    rates = list(learning_rates(optimizer))
    if len(set(rates)) == 1:
        return {"train/lr": rates[0]}
    return {f"train/lr/group{index}": rate for index, rate in enumerate(rates)}


def format_metrics(values: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}" for name, value in values.items())


def results_summary(
    state: TrainState, monitor: str, mode: str, test_metrics: dict[str, float], test_reports: dict[str, Any],
    wall_time: float, final_checkpoint: str | None,
) -> dict[str, Any]:
    """The summary ``fit`` returns (and ``cadence train`` writes as ``results.json``)."""
    best = state.best_entry()
    return {
        "monitor": monitor,
        "mode": mode,
        "best_epoch": state.best_epoch,
        "best_step": state.best_step,
        "best_value": state.best_value,
        "best_validation": {key: value for key, value in best.items() if key not in ("epoch", "step")},
        "test": test_metrics,
        "test_reports": test_reports,
        "epochs_completed": state.epoch,
        "global_step": state.global_step,
        "skipped_batches": state.skipped_batches,
        "wall_time_s": round(wall_time, 3),
        "final_checkpoint": final_checkpoint,
        "history": state.history,
    }
