"""EpochSums (running loss sums on the device) and the summary fit returns."""

from __future__ import annotations

import torch

from cadence.reporting import EpochSums, learning_rate_logs, results_summary
from cadence.state import TrainState


def test_epoch_sums_give_means_of_the_loss_and_each_named_loss():
    sums = EpochSums()
    sums.add(torch.tensor(1.0), {"ctc": torch.tensor(3.0)})
    sums.add(torch.tensor(3.0), {"ctc": torch.tensor(5.0)})
    assert sums.means("train") == {"train/loss": 2.0, "train/loss_ctc": 4.0}


def test_the_window_restarts_after_each_log_line_and_reset_clears_the_epoch():
    sums = EpochSums()
    sums.add(torch.tensor(2.0), {})
    sums.add(torch.tensor(4.0), {})
    assert sums.window_mean(2) == 3.0
    sums.add(torch.tensor(10.0), {})
    assert sums.window_mean(1) == 10.0
    sums.reset()
    assert sums.means("train") == {"train/loss": 0.0}


def test_epoch_sums_round_trip_through_their_state():
    sums = EpochSums()
    sums.add(torch.tensor(1.5), {"attention": torch.tensor(0.5)})
    restored = EpochSums()
    restored.load_state_dict(sums.state_dict())
    assert restored.means("val") == sums.means("val") == {"val/loss": 1.5, "val/loss_attention": 0.5}


def test_the_summary_reports_the_best_epochs_validation():
    state = TrainState(epoch=2, global_step=20, best_value=0.2, best_epoch=2,
                       history=[{"epoch": 1, "step": 10, "val/loss": 0.5}, {"epoch": 2, "step": 20, "val/loss": 0.2}])
    summary = results_summary(state, "val/loss", "min", {"test/loss": 0.3}, {}, 1.23456, "runs/x/step-000000020")
    assert summary["best_validation"] == {"val/loss": 0.2}
    assert summary["wall_time_s"] == 1.235 and summary["final_checkpoint"] == "runs/x/step-000000020"


def test_learning_rates_are_one_value_unless_groups_differ():
    weights = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    assert learning_rate_logs(torch.optim.SGD(weights, lr=0.1)) == {"train/lr": 0.1}
    groups = torch.optim.SGD([{"params": weights[:1], "lr": 0.1}, {"params": weights[1:], "lr": 0.2}])
    assert learning_rate_logs(groups) == {"train/lr/group0": 0.1, "train/lr/group1": 0.2}
