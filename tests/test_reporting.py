"""EpochSums (running loss sums on the device) and the summary fit returns."""

from __future__ import annotations

import json
import math

import torch
from torch.utils.data import DataLoader, TensorDataset

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


def strict_json_loads(text: str):
    """What a strict parser (JavaScript's, jq's, Go's) accepts: no NaN, Infinity or -Infinity."""
    def refuse(constant):
        raise ValueError(f"bare {constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_results_json_and_the_printed_summary_are_strict_json_with_null_for_non_finite_values(tmp_path, monkeypatch, capsys):
    import cadence.commands.train as train_command
    from cadence import ClassificationTask, Experiment, Trainer
    from cadence.commands.cli import main

    # A NaN test loss (NaN in the test inputs).
    task = ClassificationTask(torch.nn.Linear(4, 3))
    train = DataLoader(TensorDataset(torch.ones(8, 4), torch.zeros(8, dtype=torch.int64)), batch_size=4)
    test = DataLoader(TensorDataset(torch.full((8, 4), float("nan")), torch.zeros(8, dtype=torch.int64)), batch_size=4)
    with Experiment(tmp_path / "run", tensorboard=False) as experiment:
        results = Trainer(task, torch.optim.SGD(task.parameters(), lr=0.1), max_epochs=1, experiment=experiment,
                          progress_bar=False).fit(train, test_data=test)
    assert math.isnan(results["test"]["test/loss"])  # in Python: the float
    on_disk = strict_json_loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["test"] == {"test/loss": None} and on_disk["global_step"] == 2
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        strict_json_loads(line)

    monkeypatch.setattr(train_command, "train_recipe", lambda recipe, overrides, exp_dir: {**results, "experiment": str(tmp_path / "run")})
    assert main(["train", "recipe.yaml"]) == 0
    printed = strict_json_loads(capsys.readouterr().out)
    assert printed["test"]["test/loss"] is None and printed["experiment"] == str(tmp_path / "run")


def test_a_loss_part_not_trained_after_a_reset_is_not_reported():
    sums = EpochSums()
    sums.add(torch.tensor(2.0), {"ctc": torch.tensor(2.0)})
    sums.reset()  # the next epoch trains another loss (a stage switched the task)
    sums.add(torch.tensor(1.0), {"framewise": torch.tensor(1.0)})
    assert sums.means("train") == {"train/loss": 1.0, "train/loss_framewise": 1.0}
