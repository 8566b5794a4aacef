from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from cadence.models.cnn_classifier import CNNClassifier
from cadence.optim.scheduled_values import dropout_setting
from random_draws import same_forward_and_draws


def test_shapes_and_default_lengths():
    model = CNNClassifier(num_classes=6, n_mels=40, channels=16, layers=2)
    features = torch.randn(3, 40, 25)
    assert model(features).shape == (3, 6)
    model.eval()
    assert torch.allclose(model(features), model(features, torch.tensor([25, 25, 25])))


def test_an_utterance_alone_equals_it_inside_a_padded_batch():
    torch.manual_seed(0)
    model = CNNClassifier(num_classes=4, channels=16, layers=3)
    model.train()
    for _ in range(3):  # give the batch norms non-trivial running statistics
        model(torch.randn(4, 40, 30), torch.tensor([30, 20, 12, 25]))
    model.eval()
    short = torch.randn(1, 40, 12)
    padded = torch.cat([torch.cat([short, torch.full((1, 40, 18), 7.0)], dim=2), torch.randn(1, 40, 30)])
    alone = model(short, torch.tensor([12]))
    batched = model(padded, torch.tensor([12, 30]))
    assert torch.allclose(alone, batched[:1], atol=1e-5)


def test_training_statistics_ignore_padding():
    torch.manual_seed(0)
    model = CNNClassifier(num_classes=3, channels=8, layers=1, dropout=0.0)
    features = torch.randn(2, 40, 10)
    padded = torch.cat([features, torch.randn(2, 40, 5) * 100], dim=2)  # garbage in the padding
    lengths = torch.tensor([10, 10])
    assert torch.allclose(model(features, lengths), model(padded, lengths), atol=1e-5)


def test_loss_falls_on_a_tiny_batch():
    torch.manual_seed(0)
    model = CNNClassifier(num_classes=3, channels=16, layers=2, dropout=0.0)
    features, lengths, targets = torch.randn(6, 40, 20), torch.tensor([20, 18, 15, 20, 12, 9]), torch.tensor([0, 1, 2, 0, 1, 2])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(features, lengths), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_conv_dropout_is_off_by_default_and_a_dropout_schedule_reaches_it():
    torch.manual_seed(0)
    model = CNNClassifier(num_classes=3, channels=8, layers=2).train()
    features, lengths = torch.randn(4, 40, 20), torch.tensor([20, 15, 9, 20])
    without = copy.deepcopy(model)
    without.conv_dropout = nn.Identity()  # the model as it was before conv_dropout
    assert model.conv_dropout.p == 0.0
    assert same_forward_and_draws(lambda: model(features, lengths), lambda: without(features, lengths))
    dropout_setting(model, "schedules.dropout").assign(0.5)  # a global dropout schedule
    assert model.conv_dropout.p == 0.5 and model.dropout.p == 0.5
    model.dropout.p = without.dropout.p = 0.0
    torch.manual_seed(1)
    dropped = model(features, lengths)
    torch.manual_seed(1)
    assert not torch.allclose(dropped, without(features, lengths))  # the convolution blocks' outputs are dropped
    model.eval()
    without = copy.deepcopy(model)  # the same batch norm statistics
    without.conv_dropout = nn.Identity()
    assert torch.equal(model(features, lengths), without(features, lengths))  # nothing dropped in evaluation
