"""Self-supervised training as PASE+ does it (Ravanelli et al., 2020): an encoder, and workers
that each learn to predict something about the clean input from the encoder's frames.

Each step: the labellers compute their targets from the clean batch (no gradient, on the
device); the encoder reads the batch through the ``features`` section (PASE+'s distortions:
reverberation, noise, band drop...; training only), so it must recover from the distorted
signal what the workers ask of the clean one; every worker predicts its target from the
encoder's frames; the loss is the weighted sum of the workers' losses, each logged on its own
(``train/loss_<worker>``, ``val/loss_<worker>``).

A recipe lists the workers, each with its ``model`` (a registered model: ``worker_mlp``,
``waveform_decoder`` or one of your own, which gets ``input_size``, ``output_size`` and, if
it takes it, ``stride``), its ``labeller`` (a registered labeller, which gets the encoder's
``sample_rate`` and ``stride``), its ``loss`` and its ``weight``::

    model: {name: pase_encoder, sample_rate: 8000}
    task:
      name: pase
      workers:
        regressors:
          waveform: {model: {name: waveform_decoder}, labeller: {name: waveform}, loss: l1}
          lps: {model: {name: worker_mlp}, labeller: {name: lps}}        # loss: mse by default
        classifiers:
          lim: {model: {name: worker_mlp}, labeller: {name: lim}}        # loss: bce
          gim: {model: {name: worker_mlp}, labeller: {name: gim}}

Regressors default to ``mse`` over valid frames (``l1`` is PASE+'s choice for the waveform);
classifiers to ``bce`` (binary cross-entropy on the worker's logits). A worker of your own is a
model and a labeller registered in a module listed under ``imports:``; nothing in cadence
changes. Parameter names: the encoder's ``model.*``, worker ``w``'s ``workers.w.*``. A worker's
learning rate (PASE+'s ``worker_lr_start``) is its module's in ``optimizer: per_module``, one
optimizer per worker if you like, or a parameter group in ``optimizer.groups``; a worker spec
that names an ``lr`` is refused with that advice, so the rate is decided in one place.

>>> from types import SimpleNamespace
>>> from cadence.models.pase import PASEEncoder
>>> encoder = PASEEncoder(sample_rate=8000, sinc_filters=4, sinc_kernel=31, channels=[4] * 7, rnn_hidden=4, output_size=8)
>>> task = PASETask(encoder, workers={"classifiers": {"lim": {"model": {"name": "worker_mlp", "hidden": 8},
...                                                          "labeller": {"name": "lim"}}}})
>>> batch = SimpleNamespace(inputs=torch.randn(3, 1600), input_lengths=torch.tensor([1600, 1200, 800]))
>>> sorted(task.training_step(batch).losses)
['lim']
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import pydantic
import torch
from torch import nn
from torch.nn import functional as F

from cadence.bounds import NonNegativeFloat
from cadence.errors import ConfigError
from cadence.losses import masked_mean
from cadence.models.stochastic_depth import passed_over
from cadence.models import workers as _worker_models  # noqa: F401  (registers worker_mlp and waveform_decoder)
from cadence.registry import LABELLERS, MODELS, TASKS, component_spec, spec_settings, validation_problems
from cadence.tasks import info_max  # noqa: F401  (registers the lim and gim labellers)
from cadence.tasks.base import StepOutput, refuse_duration_changes

__all__ = ["PASETask", "Worker", "Workers"]

WorkerLoss = Literal["mse", "l1", "bce"]
# What the task passes to a worker's model and labeller itself (never recipe keys).
_MODEL_FILLED = ("input_size", "output_size", "stride")


class Worker(pydantic.BaseModel):
    """One worker: ``model`` and ``labeller`` (each ``{name: ..., settings}``), ``loss``, ``weight``."""

    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False)

    model: component_spec(MODELS, exclude=_MODEL_FILLED)
    labeller: component_spec(LABELLERS)
    loss: WorkerLoss | None = None  # None: mse for a regressor, bce for a classifier
    weight: NonNegativeFloat = 1.0

    @pydantic.model_validator(mode="before")
    @classmethod
    def learning_rate_belongs_to_the_optimizer(cls, value: Any) -> Any:
        # One place decides every learning rate: the optimizer section (PASE+'s worker_lr_start).
        if isinstance(value, dict) and {"lr", "learning_rate"} & set(value):
            raise ValueError("a worker's learning rate is set in the optimizer, not here: give it a module of "
                             "'optimizer: {name: per_module, modules: {<worker>: {params: \"workers.<worker>.*\", "
                             "name: adam, lr: ...}}}' (and the encoder one for 'model.*')")
        return value


class Workers(pydantic.BaseModel):
    """``regressors`` and ``classifiers``, each a mapping of worker names to :class:`Worker`."""

    model_config = pydantic.ConfigDict(extra="forbid")

    regressors: dict[str, Worker] = {}
    classifiers: dict[str, Worker] = {}

    @pydantic.model_validator(mode="after")
    def some_and_distinct(self) -> Workers:
        if not self.regressors and not self.classifiers:
            raise ValueError("list at least one worker under regressors or classifiers")
        both = sorted(set(self.regressors) & set(self.classifiers))
        if both:
            raise ValueError(f"worker names must be unique across regressors and classifiers: {both}")
        return self


@TASKS.register("pase")
class PASETask(nn.Module):
    """An encoder (``model``: waveforms and lengths in, ``[B, D, T]`` frames and frame lengths
    out, with ``sample_rate``, ``stride`` and ``output_size`` attributes) trained by workers."""

    gives_predictions = False  # only losses: the Trainer refuses metrics for it

    def __init__(self, model: nn.Module, workers: Workers, features: nn.Module | None = None):
        super().__init__()
        for attribute in ("sample_rate", "stride", "output_size"):
            if not hasattr(model, attribute):
                raise ConfigError(f"task pase: the model must be an encoder with a '{attribute}' attribute (e.g. pase_encoder); "
                                  f"{type(model).__name__} has none")
        if isinstance(workers, dict):
            try:
                workers = Workers.model_validate(workers)
            except pydantic.ValidationError as error:
                raise ConfigError(validation_problems(error, "task.workers")) from None
        refuse_duration_changes(features, "and the pase task's workers take their targets from the clean signal frame "
                                          "by frame; remove it from the features")
        self.model = model
        self.features = features
        self.workers = nn.ModuleDict()
        self.labellers = nn.ModuleDict()
        self.losses: dict[str, WorkerLoss] = {}
        self.weights: dict[str, float] = {}
        for kind, listed in (("regressors", workers.regressors), ("classifiers", workers.classifiers)):
            for name, worker in listed.items():
                self.add_worker(kind, name, worker)

    def add_worker(self, kind: str, name: str, worker: Worker) -> None:
        where = f"task.workers.{kind}.{name}"
        labeller_factory = LABELLERS.get(worker.labeller["name"], f"{where}.labeller.name")
        labeller = labeller_factory(sample_rate=self.model.sample_rate, stride=self.model.stride, **spec_settings(worker.labeller))
        reads_embeddings = getattr(labeller, "reads", "waveform") == "embeddings"
        input_size = labeller.worker_input_size(self.model.output_size) if reads_embeddings else self.model.output_size
        model_factory = MODELS.get(worker.model["name"], f"{where}.model.name")
        filled = {"input_size": input_size, "output_size": labeller.size}
        if "stride" in inspect.signature(model_factory).parameters:
            filled["stride"] = self.model.stride
        self.workers[name] = model_factory(**filled, **spec_settings(worker.model))
        self.labellers[name] = labeller
        self.losses[name] = worker.loss or ("mse" if kind == "regressors" else "bce")
        self.weights[name] = worker.weight

    def training_step(self, batch: Any) -> StepOutput:
        return self.step(batch)

    def validation_step(self, batch: Any) -> StepOutput:
        return self.step(batch)  # the features (distortions) are off in evaluation mode

    def step(self, batch: Any) -> StepOutput:
        clean, lengths = batch.inputs, batch.input_lengths.to(batch.inputs.device)
        heard, heard_lengths = (clean, lengths) if self.features is None else self.features(clean, lengths)
        if heard.shape != clean.shape:
            raise ConfigError(f"features: the pase task's encoder takes the waveform, distorted or not, but its features "
                              f"turn [batch, samples] {list(clean.shape)} into {list(heard.shape)}; list only distortions there")
        embeddings, frame_lengths = self.model(heard, heard_lengths)  # [B, D, T], [B]
        parts = {name: self.worker_loss(name, clean, lengths, embeddings, frame_lengths) for name in self.workers}
        loss = sum(self.weights[name] * part for name, part in parts.items())
        return StepOutput(loss=loss, losses=parts, batch_size=clean.shape[0])

    def worker_loss(self, name: str, clean: torch.Tensor, lengths: torch.Tensor, embeddings: torch.Tensor,
                    frame_lengths: torch.Tensor) -> torch.Tensor:
        labeller, worker, loss = self.labellers[name], self.workers[name], self.losses[name]
        if getattr(labeller, "reads", "waveform") == "embeddings":
            inputs, targets = labeller(embeddings, frame_lengths)
            target_lengths = torch.ones(len(targets), dtype=torch.long, device=targets.device)
        else:
            with torch.no_grad():
                targets, target_lengths = labeller(clean, lengths)  # [B, size, T'] from the clean signal
            inputs = embeddings
        if len(targets) == 0:
            # No pair in this batch (LIM/GIM need two utterances with frames): a zero loss that
            # still reaches the encoder and, under DDP, this worker's parameters, so every process
            # has a gradient for every parameter and none waits for the others.
            return passed_over(embeddings.sum() * 0.0, worker, fsdp_refusal=(
                f"task pase: worker '{name}' had no pair in a batch (it needs two utterances with frames in each "
                "process's batch), and parallel: fsdp cannot leave a worker out: use parallel: ddp or larger batches"))
        predictions = worker(inputs)
        size = min(predictions.shape[-1], targets.shape[-1])
        predictions, targets = predictions[..., :size], targets[..., :size].to(predictions.dtype)
        if loss == "bce":
            per_value = F.binary_cross_entropy_with_logits(predictions, targets, reduction="none")
        elif loss == "l1":
            per_value = (predictions - targets).abs()
        else:
            per_value = (predictions - targets) ** 2
        return masked_mean(per_value, target_lengths.to(predictions.device))
