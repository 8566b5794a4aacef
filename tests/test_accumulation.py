"""``accumulate_batches``: k batches make one update, the update of one batch as large as all of
them; the last window of an epoch may be shorter; a run resumes exactly between updates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cadence import ClassificationTask, Trainer
from cadence.checkpoint.retention import CheckpointPolicy
from cadence.experiment import Experiment


def examples(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(count, 6, generator=generator), torch.randint(0, 3, (count,), generator=generator)


def split(inputs: torch.Tensor, targets: torch.Tensor, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(zip(torch.split(inputs, sizes), torch.split(targets, sizes)))


def trained(data: list, max_epochs: int = 2, **options) -> Trainer:
    torch.manual_seed(0)
    task = ClassificationTask(nn.Linear(6, 3))
    optimizer = torch.optim.SGD(task.parameters(), lr=0.1, momentum=0.9)
    trainer = Trainer(task, optimizer, max_epochs=max_epochs, progress_bar=False, log_every=1,
                      scheduler=torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9),
                      scheduler_interval="step", **options)
    trainer.fit(data)
    return trainer


@pytest.mark.parametrize("sizes, large", [
    ([4] * 8, [16, 16]),  # whole windows
    ([4, 4, 4, 4, 4, 4, 3, 5, 2, 6], [16, 16, 8]),  # batches of any size, and a shorter last window
])
def test_accumulated_batches_make_the_update_of_one_large_batch(sizes, large):
    inputs, targets = examples(sum(sizes))
    accumulated = trained(split(inputs, targets, sizes), accumulate_batches=4)
    one_batch = trained(split(inputs, targets, large))
    assert accumulated.state.global_step == one_batch.state.global_step == 2 * len(large)
    for name, value in accumulated.task.state_dict().items():
        torch.testing.assert_close(value, one_batch.task.state_dict()[name], rtol=1e-5, atol=1e-6)
    assert accumulated.scheduler.last_epoch == one_batch.scheduler.last_epoch  # one schedule step per update


def test_a_run_stopped_between_updates_resumes_to_the_same_weights(tmp_path):
    inputs, targets = examples(40)
    data = split(inputs, targets, [4] * 10)
    policy = CheckpointPolicy(every_steps=1, keep_last=10)
    with Experiment(tmp_path / "whole", tensorboard=False) as experiment:
        whole = trained(data, accumulate_batches=4, experiment=experiment, checkpoint_policy=policy)
    with Experiment(tmp_path / "halves", tensorboard=False) as experiment:
        trained(data, accumulate_batches=4, experiment=experiment, checkpoint_policy=policy, max_steps=4)
    with Experiment(tmp_path / "halves", tensorboard=False) as experiment:
        torch.manual_seed(123)  # the checkpoint's random state must win
        task = ClassificationTask(nn.Linear(6, 3))
        optimizer = torch.optim.SGD(task.parameters(), lr=0.1, momentum=0.9)
        resumed = Trainer(task, optimizer, max_epochs=2, progress_bar=False, log_every=1, accumulate_batches=4,
                          scheduler=torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9),
                          scheduler_interval="step", experiment=experiment, checkpoint_policy=policy)
        resumed.fit(data, resume_from=tmp_path / "halves")
    assert resumed.state.global_step == whole.state.global_step == 6
    for name, value in whole.task.state_dict().items():
        assert torch.equal(value, resumed.task.state_dict()[name]), name


def test_the_logged_loss_is_the_mean_of_the_batches_since_the_last_line():
    from cadence.reporting import EpochSums

    sums = EpochSums()
    for loss in (1.0, 2.0, 6.0):  # one update of three batches, logged every step
        sums.add(torch.tensor(loss), {})
    assert sums.window_mean(steps=1) == 3.0
    sums.add(torch.tensor(5.0), {})
    assert sums.window_mean(steps=1) == 5.0
    # Restored from a checkpoint written before batches were counted: divided by the steps.
    sums.load_state_dict({"loss": torch.tensor(8.0), "window_loss": torch.tensor(8.0), "batches": torch.tensor(4)})
    assert sums.window_mean(steps=2) == 4.0


class FrameClassifier(nn.Module):
    """Per-frame logits ``[B, T, C]`` from features ``[B, 4, T]``: no frame sees another."""

    def __init__(self):
        super().__init__()
        self.projection = nn.Conv1d(4, 5, kernel_size=1)

    def forward(self, features, lengths):
        return self.projection(features).transpose(1, 2), lengths


def ctc_batches(target_lengths: list[list[int]]) -> list:
    """Speech batches whose utterances have the given numbers of tokens (and 12 frames each)."""
    from cadence.data.dataset import Batch

    generator = torch.Generator().manual_seed(0)
    batches = []
    for lengths in target_lengths:
        size = len(lengths)
        targets = torch.zeros(size, max(lengths), dtype=torch.int64)
        for row, length in enumerate(lengths):
            targets[row, :length] = torch.randint(0, 4, (length,), generator=generator)
        batches.append(Batch(torch.randn(size, 4, 12, generator=generator), torch.full((size,), 12), targets,
                             torch.tensor(lengths), [f"u{len(batches)}-{row}" for row in range(size)], [None] * size))
    return batches


def joined(batches: list) -> object:
    from cadence.data.dataset import Batch

    width = max(batch.targets.shape[1] for batch in batches)
    targets = torch.cat([nn.functional.pad(batch.targets, (0, width - batch.targets.shape[1])) for batch in batches])
    return Batch(torch.cat([batch.inputs for batch in batches]), torch.cat([batch.input_lengths for batch in batches]),
                 targets, torch.cat([batch.target_lengths for batch in batches]),
                 [i for batch in batches for i in batch.ids], [s for batch in batches for s in batch.speakers])


@pytest.mark.parametrize("normalize", ["tokens", "target_length"])
def test_a_loss_averaged_over_tokens_accumulates_as_the_mean_over_all_tokens(normalize):
    from cadence.data.tokenizers import CharacterTokenizer
    from cadence.tasks.ctc import CTCTask

    # Batches of very different token counts: weighting each batch alike would differ.
    batches = ctc_batches([[1, 1], [5, 6, 4], [2], [6, 6]])
    results = {}
    for name, data, k in (("accumulated", batches, 2), ("joined", [joined(batches[:2]), joined(batches[2:])], 1)):
        torch.manual_seed(0)
        task = CTCTask(FrameClassifier(), tokenizer=CharacterTokenizer(list("abcd")), normalize=normalize)
        trainer = Trainer(task, torch.optim.SGD(task.parameters(), lr=0.5), max_epochs=2, progress_bar=False,
                          accumulate_batches=k, device="cpu")
        trainer.fit(data)
        results[name] = task.state_dict()
    for key, value in results["joined"].items():
        torch.testing.assert_close(results["accumulated"][key], value, rtol=1e-5, atol=1e-6)
