"""The PASE task: workers from configuration alone (one of this test's own), LIM/GIM pairs, losses, mistakes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from torch import nn

from cadence.errors import ConfigError
from cadence.models.pase import PASEEncoder
from cadence.registry import LABELLERS
from cadence.tasks.info_max import InfoMaxPairs
from cadence.tasks.pase import PASETask

TINY = {"sample_rate": 8000, "sinc_filters": 4, "sinc_kernel": 31, "channels": [4] * 7, "rnn_hidden": 4, "output_size": 8}


@LABELLERS.register("test_frame_rms")
class FrameRMS(nn.Module):
    """A labeller of this test's own: the RMS of each encoder frame's samples."""

    size = 1

    def __init__(self, sample_rate: int, stride: int, scale: float = 1.0):
        super().__init__()
        self.stride, self.scale = stride, scale

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = waveforms.shape[-1] // self.stride
        framed = waveforms[:, : frames * self.stride].reshape(waveforms.shape[0], 1, frames, self.stride)
        return self.scale * framed.pow(2).mean(-1).sqrt(), lengths // self.stride


def batch_of(waveforms: torch.Tensor, lengths: list[int]) -> SimpleNamespace:
    lengths = torch.tensor(lengths)
    mask = torch.arange(waveforms.shape[-1])[None, :] < lengths[:, None]
    return SimpleNamespace(inputs=waveforms * mask, input_lengths=lengths)


def test_a_worker_of_the_users_own_trains_without_any_change_to_cadence() -> None:
    torch.manual_seed(0)
    workers = {"regressors": {"rms": {"model": {"name": "worker_mlp", "hidden": 16}, "labeller": {"name": "test_frame_rms", "scale": 10.0}}}}
    task = PASETask(PASEEncoder(**TINY), workers=workers)
    assert isinstance(task.labellers["rms"], FrameRMS) and task.labellers["rms"].stride == 160
    batch = batch_of(torch.randn(4, 3200) * torch.tensor([[0.1], [0.5], [1.0], [2.0]]), [3200, 3200, 2400, 1600])
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        output = task.training_step(batch)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.losses["rms"].item())
    assert losses[-1] < 0.25 * losses[0]
    assert set(output.losses) == {"rms"} and output.batch_size == 4


def test_the_loss_is_the_weighted_sum_of_each_workers_own() -> None:
    torch.manual_seed(1)
    workers = {
        "regressors": {
            "rms_mse": {"model": {"name": "worker_mlp"}, "labeller": {"name": "test_frame_rms"}, "weight": 0.5},
            "rms_l1": {"model": {"name": "worker_mlp"}, "labeller": {"name": "test_frame_rms"}, "loss": "l1"},
        },
        "classifiers": {"lim": {"model": {"name": "worker_mlp"}, "labeller": {"name": "lim"}, "weight": 2.0}},
    }
    task = PASETask(PASEEncoder(**TINY), workers=workers).eval()
    batch = batch_of(torch.randn(3, 2400), [2400, 1700, 900])  # 15, 10 and 5 frames
    output = task.validation_step(batch)
    parts = output.losses
    assert output.loss.item() == pytest.approx(0.5 * parts["rms_mse"].item() + parts["rms_l1"].item() + 2.0 * parts["lim"].item())
    # The regressors' losses by hand, over valid frames only.
    embeddings, frame_lengths = task.model(batch.inputs, batch.input_lengths)
    targets, _ = task.labellers["rms_mse"](batch.inputs, batch.input_lengths)
    for name, power in (("rms_mse", 2), ("rms_l1", 1)):
        predictions = task.workers[name](embeddings)
        errors = [(predictions[row, 0, :length] - targets[row, 0, :length]).abs().pow(power) for row, length in enumerate(frame_lengths.tolist())]
        assert parts[name].item() == pytest.approx(torch.cat(errors).mean().item(), rel=1e-5)


def test_info_max_negatives_always_come_from_another_utterance() -> None:
    """Each utterance's frames hold its own index, so a window mean says which utterance it came from."""
    generator = torch.Generator().manual_seed(0)
    for trial in range(200):
        batch = int(torch.randint(1, 7, (), generator=generator))
        lengths = torch.randint(0, 12, (batch,), generator=generator)
        embeddings = torch.arange(batch, dtype=torch.float32)[:, None, None].expand(batch, 3, 12).clone()
        pairs = InfoMaxPairs(8000, 160, window=int(torch.randint(1, 6, (), generator=generator)))
        inputs, targets = pairs(embeddings, lengths, generator=generator)
        present = (lengths > 0).nonzero().flatten().tolist()
        if len(present) < 2:
            assert inputs.shape[0] == 0, trial
            continue
        count = len(present)
        anchors, candidates = inputs[:, 0, 0], inputs[:, 3, 0]  # dimension 0 of the anchor and of the candidate
        assert anchors[:count].tolist() == [float(row) for row in present] == anchors[count:].tolist()
        assert torch.equal(candidates[:count], anchors[:count])  # positives: the same utterance
        assert (candidates[count:] != anchors[count:]).all(), trial  # negatives: never the utterance itself
        assert set(candidates[count:].tolist()) <= set(map(float, present))  # ... and never an empty one
        assert targets.flatten().tolist() == [1.0] * count + [0.0] * count


def test_info_max_draws_depend_on_the_batch_size_only() -> None:
    states = []
    for lengths in (torch.tensor([5, 5, 5]), torch.tensor([0, 9, 1])):
        generator = torch.Generator().manual_seed(3)
        InfoMaxPairs(8000, 160, window=2)(torch.randn(3, 4, 9), lengths, generator=generator)
        states.append(generator.get_state())
    assert torch.equal(*states)


def test_a_length_changing_feature_is_refused() -> None:
    from cadence.data.speed_perturbation import SpeedPerturbation

    workers = {"regressors": {"rms": {"model": {"name": "worker_mlp"}, "labeller": {"name": "test_frame_rms"}}}}
    with pytest.raises(ConfigError, match="SpeedPerturbation changes each utterance's duration"):
        PASETask(PASEEncoder(**TINY), workers=workers, features=SpeedPerturbation(factors=[1.1]))


def test_features_that_are_not_distortions_are_refused() -> None:
    from cadence.data.features import LogMel

    workers = {"regressors": {"rms": {"model": {"name": "worker_mlp"}, "labeller": {"name": "test_frame_rms"}}}}
    task = PASETask(PASEEncoder(**TINY), workers=workers, features=LogMel(sample_rate=8000))
    with pytest.raises(ConfigError, match="list only distortions there"):
        task.training_step(batch_of(torch.randn(2, 1600), [1600, 1600]))


@pytest.mark.parametrize(("workers", "message"), [
    ({}, "at least one worker"),
    ({"regressors": {"a": {"model": {"name": "worker_mlp"}, "labeller": {"name": "lsp"}}}},
     r"task.workers.regressors.a.labeller: unknown labeller 'lsp'"),
    ({"regressors": {"a": {"model": {"name": "worker_mlp", "hiden": 3}, "labeller": {"name": "lim"}}}},
     r"task.workers.regressors.a.model: hiden: Extra inputs are not permitted"),
    ({"regressors": {"a": {"model": {"name": "worker_mlp"}, "labeller": {"name": "lim"}, "loss": "huber"}}},
     r"task.workers.regressors.a.loss"),
    ({"regressors": {"a": {"model": {"name": "worker_mlp"}, "labeller": {"name": "lim"}}},
      "classifiers": {"a": {"model": {"name": "worker_mlp"}, "labeller": {"name": "gim"}}}}, "unique"),
    ({"regressors": {"a": {"model": {"name": "waveform_decoder", "upsampling": [4, 4]}, "labeller": {"name": "test_frame_rms"}}}},
     r"product is 160"),
    # A learning rate is decided by the optimizer section only: the message says where it goes.
    ({"regressors": {"a": {"model": {"name": "worker_mlp"}, "labeller": {"name": "lim"}, "lr": 1e-3}}},
     r"task.workers.regressors.a: a worker's learning rate is set in the optimizer.*workers.<worker>.\*"),
])
def test_mistakes_name_the_worker_and_the_key(workers, message) -> None:
    with pytest.raises(ConfigError, match=message):
        PASETask(PASEEncoder(**TINY), workers=workers)


def test_the_model_must_be_an_encoder() -> None:
    with pytest.raises(ConfigError, match="'sample_rate' attribute"):
        PASETask(nn.Linear(2, 2), workers={"classifiers": {"lim": {"model": {"name": "worker_mlp"}, "labeller": {"name": "lim"}}}})


def test_under_ddp_a_worker_without_a_pair_gets_a_zero_gradient_so_every_process_agrees() -> None:
    """A process whose batch holds one utterance has no LIM pair: DDP still needs a gradient for
    every parameter, else the processes that had pairs wait for it at the next update."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # in-process: no port to wait on
    try:
        torch.manual_seed(0)
        task = PASETask(PASEEncoder(**TINY), workers={"classifiers": {"lim": {"model": {"name": "worker_mlp", "hidden": 8},
                                                                             "labeller": {"name": "lim"}}}})
        output = task.training_step(batch_of(torch.randn(1, 1600), [1600]))
        output.loss.backward()
        assert output.losses["lim"].item() == 0.0
        gradients = [parameter.grad for parameter in task.workers["lim"].parameters()]
        assert gradients and all(gradient is not None and not gradient.any() for gradient in gradients)
        assert all(parameter.grad is not None for parameter in task.model.parameters())
    finally:
        dist.destroy_process_group()
