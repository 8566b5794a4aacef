"""run_recurrent: the unpacked pass (for export) gives the packed pass's outputs, padding and all."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cadence.models.deepspeech2 import DeepSpeech2
from cadence.models.recurrent import run_recurrent


@pytest.mark.parametrize("kind", [nn.GRU, nn.LSTM])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_the_unpacked_pass_reads_each_utterance_to_its_own_length_as_the_packed_one(kind, bidirectional):
    torch.manual_seed(0)
    rnn = kind(5, 7, batch_first=True, bidirectional=bidirectional)
    inputs = torch.randn(4, 9, 5)  # what lies beyond a length must not matter
    lengths = torch.tensor([9, 3, 6, 1])
    packed = run_recurrent(rnn, inputs, lengths, packed=True)
    unpacked = run_recurrent(rnn, inputs, lengths, packed=False)
    assert unpacked.shape == packed.shape == (4, 9, 14 if bidirectional else 7)
    torch.testing.assert_close(unpacked, packed, rtol=0, atol=1e-6)
    assert unpacked[1, 3:].abs().sum() == 0  # zero beyond the length, as pad_packed_sequence gives


def test_an_unpacked_bidirectional_rnn_of_several_layers_is_refused():
    with pytest.raises(ValueError, match="one layer"):
        run_recurrent(nn.GRU(3, 4, num_layers=2, batch_first=True, bidirectional=True), torch.randn(1, 5, 3),
                      torch.tensor([5]), packed=False)


def test_deepspeech2_gives_the_same_outputs_without_packed_sequences():
    torch.manual_seed(0)
    model = DeepSpeech2(num_classes=11, n_mels=40, conv_channels=4, rnn_hidden=16, rnn_layers=2).eval()
    features, lengths = torch.randn(3, 40, 120), torch.tensor([120, 77, 30])
    expected, expected_lengths = model(features, lengths)
    model.packed_sequences = False
    logits, output_lengths = model(features, lengths)
    assert torch.equal(output_lengths, expected_lengths)
    valid = torch.arange(logits.shape[1])[None, :] < output_lengths[:, None]
    torch.testing.assert_close(logits[valid], expected[valid], rtol=0, atol=1e-5)
