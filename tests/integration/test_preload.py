"""Fine-tuning as a recipe will do it: a real Trainer run leaves an experiment folder; a new
model with another output layer is initialised, preloaded from it, partly frozen, and trained."""

from __future__ import annotations

import torch

from cadence import Experiment, Trainer
from cadence.checkpoint.checkpointer import find_checkpoint
from cadence.checkpoint.format import load_checkpoint
from cadence.data.dataset import Batch
from cadence.data.tokenizers import WordTokenizer
from cadence.models.deepspeech2 import DeepSpeech2
from cadence.tasks import CTCTask
from cadence.weights import count_parameters, describe_report, freeze_parameters, initialize_parameters, preload_from_files

WORDS = ["one two three", "three", "two two one", "one"]


def ctc_task(words: list[str]) -> CTCTask:
    tokenizer = WordTokenizer.from_texts(words)
    model = DeepSpeech2(len(tokenizer) + 1, n_mels=16, conv_channels=4, rnn_hidden=8, rnn_type="lstm", dropout=0.0)
    return CTCTask(model, tokenizer=tokenizer)


def batches(tokenizer, count: int = 2) -> list[Batch]:
    generator = torch.Generator().manual_seed(0)
    targets = [tokenizer.encode(text) for text in WORDS]
    padded = torch.zeros(len(WORDS), max(map(len, targets)), dtype=torch.long)
    for row, tokens in enumerate(targets):
        padded[row, : len(tokens)] = torch.tensor(tokens)
    return [Batch(inputs=torch.randn(4, 16, 40, generator=generator), input_lengths=torch.tensor([40, 30, 36, 20]),
                  targets=padded, target_lengths=torch.tensor([len(tokens) for tokens in targets]),
                  ids=[f"utt{index}" for index in range(4)], speakers=["s"] * 4) for _ in range(count)]


def train(task: CTCTask, directory, epochs: int) -> None:
    optimizer = torch.optim.AdamW([parameter for parameter in task.parameters() if parameter.requires_grad], lr=1e-2)
    with Experiment(directory, tensorboard=False) as experiment:
        Trainer(task, optimizer, max_epochs=epochs, device="cpu", experiment=experiment, progress_bar=False).fit(
            batches(task.tokenizer))


def test_a_trained_encoder_is_preloaded_frozen_and_fine_tuned_under_a_new_head(tmp_path):
    torch.manual_seed(0)
    train(ctc_task(WORDS), tmp_path / "pretrain", epochs=2)
    saved = load_checkpoint(find_checkpoint(tmp_path / "pretrain"))[0]["task"]

    torch.manual_seed(1)
    task = ctc_task(WORDS + ["four five six"])  # 7 classes where the pretrained model had 4
    initialize_parameters(task, [{"params": "model.recurrent_layers.*weight_hh*", "init": "orthogonal"},
                                 {"params": "model.recurrent_layers.*bias*", "init": "forget_gate_bias", "value": 1.0},
                                 {"params": "model.head.bias", "init": "constant", "value": 0.0}])
    report = preload_from_files(task, [{"path": str(tmp_path / "pretrain"), "ignore_params": ["model.head.*"]}])
    assert set(report.left_initialised) == {"model.head.weight", "model.head.bias"}
    assert "2 left as initialised, 2 source keys unused" in describe_report(report)
    head_before = task.model.head.weight.detach().clone()
    counts = freeze_parameters(task, ["model.convolutions.*", "model.conv_norms.*", "model.recurrent_layers.0.*"])
    assert counts == count_parameters(task) and counts.frozen > 0 and counts.trainable > 0

    train(task, tmp_path / "finetune", epochs=1)
    tuned = task.state_dict()
    for name in ("model.convolutions.0.weight", "model.conv_norms.1.weight", "model.recurrent_layers.0.weight_hh_l0"):
        assert torch.equal(tuned[name], saved[name]), name  # preloaded, then frozen through training
    assert not torch.equal(tuned["model.recurrent_layers.1.weight_hh_l0"], saved["model.recurrent_layers.1.weight_hh_l0"])
    assert not torch.equal(tuned["model.head.weight"], head_before)  # the new head trained
