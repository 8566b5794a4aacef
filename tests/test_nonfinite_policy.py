"""``on_nonfinite``: a NaN or infinite loss or gradient stops the run ("error"), or drops that one
update and goes on ("skip"), exactly as if the batch had not been there."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cadence import ClassificationTask, Trainer
from cadence.checkpoint.format import load_checkpoint
from cadence.commands.cli import main
from cadence.errors import NonFiniteLoss
from cadence.experiment import Experiment

REPOSITORY = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Batch:
    """A batch with utterance ids, as speech batches have."""

    inputs: torch.Tensor
    targets: torch.Tensor
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


class PoisonedTask(ClassificationTask):
    """Its loss is NaN on the batches whose first id is in ``poisoned`` (or its gradient, with
    ``gradient_only``: a finite loss through sqrt at 0, whose derivative is infinite)."""

    def __init__(self, poisoned: set[str], gradient_only: bool = False):
        super().__init__(nn.Linear(6, 3))
        self.poisoned, self.gradient_only = poisoned, gradient_only

    def logits(self, batch):
        return self.model(batch.inputs), batch.targets

    def training_step(self, batch):
        output = super().training_step(batch)
        if batch.ids[0] in self.poisoned:
            if self.gradient_only:
                output.loss = output.loss + torch.sqrt(self.model.weight[0, 0] * 0)
            else:
                output.loss = output.loss * float("nan")
        return output


def batches(count: int = 8) -> list[Batch]:
    generator = torch.Generator().manual_seed(0)
    return [
        Batch(torch.randn(4, 6, generator=generator), torch.randint(0, 3, (4,), generator=generator),
              [f"utt{index}-{row}" for row in range(4)])
        for index in range(count)
    ]


def train(task: ClassificationTask, data: list[Batch], **options) -> Trainer:
    torch.manual_seed(0)
    task.model.reset_parameters()
    trainer = Trainer(task, torch.optim.SGD(task.parameters(), lr=0.1, momentum=0.9), max_epochs=2,
                      progress_bar=False, log_every=1, **options)
    trainer.fit(data)
    return trainer


@pytest.mark.parametrize("gradient_only", [False, True], ids=["nan loss", "nan gradient"])
def test_skip_drops_the_update_exactly_as_if_the_batch_was_not_there(gradient_only, caplog):
    data = batches()
    skipped = train(PoisonedTask({"utt3-0"}, gradient_only), data, on_nonfinite="skip")
    without = train(PoisonedTask(set()), [batch for batch in data if batch.ids[0] != "utt3-0"])
    for name, value in skipped.task.state_dict().items():
        assert torch.equal(value, without.task.state_dict()[name]), name
    assert skipped.state.global_step == without.state.global_step == 14
    assert skipped.state.skipped_batches == 2 and skipped.state.consecutive_skips == 0  # once per epoch
    warning = next(record.getMessage() for record in caplog.records if "skipped a batch" in record.getMessage())
    assert "utt3-0, utt3-1" in warning and ("gradient norm" if gradient_only else "loss") in warning


def test_patience_consecutive_skips_stop_the_run_naming_the_step_and_the_utterances():
    with pytest.raises(NonFiniteLoss, match=r"for 3 batches in a row, the last after step 3 \(epoch 1\); utterances utt5-0"):
        train(PoisonedTask({"utt3-0", "utt4-0", "utt5-0"}), batches(), on_nonfinite="skip", nonfinite_patience=3)


def test_error_is_the_default_and_names_the_step_and_the_utterances():
    # utt3 is the fourth batch: the fourth step, found at the next check without a wait per step.
    with pytest.raises(NonFiniteLoss, match="at step 4; utterances utt3-0, utt3-1, utt3-2, utt3-3: the model diverged"):
        train(PoisonedTask({"utt3-0"}), batches())


def test_skips_are_counted_in_checkpoints_and_results(tmp_path):
    with Experiment(tmp_path / "run", tensorboard=False) as experiment:
        trainer = train(PoisonedTask({"utt3-0"}), batches(), on_nonfinite="skip", experiment=experiment)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["skipped_batches"] == 2
    state, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / f"step-{trainer.state.global_step:09d}")
    assert state["trainer_state"]["skipped_batches"] == 2


def test_the_policy_is_a_recipe_key_with_its_values_checked(capsys):
    digits = str(REPOSITORY / "recipes" / "fsdd" / "digits.yaml")
    assert main(["train", digits, "trainer.on_nonfinite=skip", "trainer.nonfinite_patience=3", "--print-config"]) == 0
    assert "on_nonfinite: skip" in capsys.readouterr().out
    assert main(["train", digits, "trainer.on_nonfinite=ignore", "--print-config"]) == 2
    assert "trainer.on_nonfinite" in capsys.readouterr().err


class Unsized:
    """An iterable of unknown length: the end of an epoch is only seen when it ends."""

    def __init__(self, data: list[Batch]):
        self.data = data

    def __iter__(self):
        return iter(self.data)


def test_a_window_the_loader_ends_inside_is_checked_too():
    data = batches(7)  # windows of 2: the last holds batch 6 alone, and its gradient is NaN
    skipped = train(PoisonedTask({"utt6-0"}, gradient_only=True), Unsized(data), on_nonfinite="skip", accumulate_batches=2)
    without = train(PoisonedTask(set()), Unsized(data[:6]), accumulate_batches=2)
    assert skipped.state.skipped_batches == 2 and skipped.state.global_step == without.state.global_step == 6
    for name, value in skipped.task.state_dict().items():
        assert torch.equal(value, without.task.state_dict()[name]), name
