"""Growing a network between stages: old weights land gate by gate where they belong, and a
width-grown network with silent new units computes what the old one did."""

from __future__ import annotations

import torch
from torch import nn

from cadence.models.deepspeech2 import DeepSpeech2
from cadence.models.growth import grow_into


def test_a_gru_grown_from_128_to_192_units_and_1_to_2_layers_keeps_each_gate_in_place():
    torch.manual_seed(0)
    small, big = nn.GRU(40, 128, num_layers=1), nn.GRU(40, 192, num_layers=2)
    old = {name: tensor.clone() for name, tensor in small.state_dict().items()}
    report = grow_into(old, big)
    for gate in range(3):  # reset, update, new: stacked along dimension 0
        rows_old, rows_new = slice(gate * 128, (gate + 1) * 128), slice(gate * 192, gate * 192 + 128)
        assert torch.equal(big.weight_ih_l0[rows_new], old["weight_ih_l0"][rows_old])
        assert torch.equal(big.weight_hh_l0[rows_new, :128], old["weight_hh_l0"][rows_old])
        assert torch.equal(big.bias_ih_l0[rows_new], old["bias_ih_l0"][rows_old])
        assert torch.equal(big.bias_hh_l0[rows_new], old["bias_hh_l0"][rows_old])
    assert report.actions["weight_hh_l0"] == "grown (384, 128) -> (576, 192)"
    assert report.actions["weight_ih_l1"].startswith("new") and report.actions["bias_hh_l1"].startswith("new")
    assert report.counts() == {"copied": 0, "grown": 4, "new": 4, "dropped": 0}
    # The rest keeps its fresh initialisation (not zeros): the new units can learn.
    assert big.weight_hh_l0[128:192].abs().sum() > 0


def test_bidirectional_inputs_above_the_first_layer_grow_direction_by_direction():
    small, big = nn.GRU(8, 4, num_layers=2, bidirectional=True), nn.GRU(8, 6, num_layers=2, bidirectional=True)
    old = {name: tensor.clone() for name, tensor in small.state_dict().items()}
    grow_into(old, big, fill="zero")
    # weight_ih_l1: [3 gates x 6, forward 6 | backward 6]; the old [3 x 4, 4 | 4] goes block by block.
    for gate in range(3):
        for direction in range(2):
            new_block = big.weight_ih_l1[gate * 6:gate * 6 + 4, direction * 6:direction * 6 + 4]
            assert torch.equal(new_block, old["weight_ih_l1"][gate * 4:(gate + 1) * 4, direction * 4:(direction + 1) * 4])
    assert big.weight_ih_l1[:, 4:6].abs().sum() == 0  # the forward block's new inputs: zero with fill="zero"


def test_deepspeech2_grown_in_width_with_silent_new_units_gives_the_old_outputs():
    torch.manual_seed(0)
    small = DeepSpeech2(num_classes=12, conv_channels=4, rnn_type="gru", rnn_layers=2, rnn_hidden=128)
    features, lengths = torch.randn(3, 40, 60), torch.tensor([60, 45, 31])
    small.train()
    small(features, lengths)  # batch-norm running statistics that are not the defaults
    small.eval()
    before, before_lengths = small(features, lengths)
    big = DeepSpeech2(num_classes=12, conv_channels=4, rnn_type="gru", rnn_layers=2, rnn_hidden=192).eval()
    report = grow_into(small.state_dict(), big, fill="zero")
    after, after_lengths = big(features, lengths)
    assert torch.equal(before_lengths, after_lengths)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert report.counts()["grown"] > 0 and report.counts()["new"] == 0


def test_deepspeech2_grown_from_one_to_three_layers_keeps_the_first_and_adds_the_others():
    small = DeepSpeech2(num_classes=12, conv_channels=4, rnn_layers=1, rnn_hidden=32)
    big = DeepSpeech2(num_classes=12, conv_channels=4, rnn_layers=3, rnn_hidden=32)
    report = grow_into(small.state_dict(), big)
    assert all(action == "copied" for name, action in report.actions.items() if name.startswith("recurrent_layers.0."))
    assert all(action.startswith("new") for name, action in report.actions.items() if name.startswith("recurrent_layers.2."))
    assert torch.equal(big.head.weight, small.head.weight)


def test_a_dimension_that_shrank_is_left_initialised_and_dropped_tensors_are_listed():
    report = grow_into(nn.Linear(8, 4).state_dict() | {"extra": torch.zeros(2)}, nn.Linear(6, 4))
    assert report.actions["weight"].startswith("new (was (4, 8), now (4, 6)")
    assert report.actions["bias"] == "copied" and report.dropped == ["extra"]
