import logging

import pytest
import torch

from cadence.data.tokenizers import WordTokenizer
from cadence.errors import ConfigError
from cadence.losses import LossTerm
from cadence.models.deepspeech2 import DeepSpeech2
from cadence.tasks import CTCTask, DecodingOptions
from text_batches import WORDS, text_batch

def small_ds2(tokenizer, time_stride=2):
    torch.manual_seed(0)
    return DeepSpeech2(len(tokenizer) + 1, n_mels=16, conv_channels=4, rnn_hidden=32, time_stride=time_stride, dropout=0.0)


def test_ctc_task_learns_a_tiny_batch_and_decodes_text():
    tokenizer = WordTokenizer.from_texts(WORDS)
    task = CTCTask(small_ds2(tokenizer), tokenizer=tokenizer)
    batch = text_batch(tokenizer, WORDS)
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        output = task.training_step(batch)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    assert losses[-1] < 0.3 * losses[0]
    assert set(output.losses) == {"ctc"}
    task.eval()
    with torch.no_grad():
        evaluation = task.validation_step(batch)
    assert evaluation.targets == WORDS  # references come back as text
    assert evaluation.predictions == WORDS  # memorised
    assert [record["id"] for record in evaluation.records] == ["utt0", "utt1", "utt2", "utt3"]
    assert evaluation.records[0] == {
        "id": "utt0", "reference": "one two three", "hypothesis": "one two three", "word_errors": 0, "reference_words": 3,
    }


def test_beam_decoding_agrees_with_greedy_on_a_trained_model():
    tokenizer = WordTokenizer.from_texts(WORDS)
    task = CTCTask(small_ds2(tokenizer), tokenizer=tokenizer)
    batch = text_batch(tokenizer, WORDS)
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        task.training_step(batch).loss.backward()
        optimizer.step()
    task.eval()
    greedy = task.validation_step(batch).predictions
    task.decoding = DecodingOptions(method="beam", beam_size=4)
    assert task.validation_step(batch).predictions == greedy


def test_an_utterance_too_long_for_its_frames_is_skipped_with_a_reason(caplog):
    tokenizer = WordTokenizer.from_texts(WORDS)
    task = CTCTask(small_ds2(tokenizer, time_stride=8), tokenizer=tokenizer)
    # utt2 "two two one": 3 tokens and a repeat need 4 frames; 8 input frames give 1.
    batch = text_batch(tokenizer, WORDS, frames=(60, 40, 8, 30))
    with caplog.at_level(logging.WARNING, logger="cadence"):
        output = task.training_step(batch)
    assert torch.isfinite(output.loss)
    warnings = [record.getMessage() for record in caplog.records if "target_too_long" in record.getMessage()]
    assert len(warnings) == 1 and "utt2" in warnings[0] and "need at least 4" in warnings[0]
    # The loss is that of the other three utterances alone.
    kept = text_batch(tokenizer, [WORDS[0], WORDS[1], WORDS[3]], frames=(60, 40, 30))
    kept.inputs = batch.inputs[[0, 1, 3]]
    task.eval()
    batch_loss = task.validation_step(batch).loss
    assert batch_loss.item() == pytest.approx(task.validation_step(kept).loss.item(), rel=1e-5)
    task.training_step(batch)  # reported once per utterance, not once per epoch
    assert sum("target_too_long" in record.getMessage() for record in caplog.records) == 1


def test_l2_penalty_and_loss_options():
    tokenizer = WordTokenizer.from_texts(WORDS)
    batch = text_batch(tokenizer, WORDS)
    plain = CTCTask(small_ds2(tokenizer), tokenizer=tokenizer)
    penalised = CTCTask(small_ds2(tokenizer), tokenizer=tokenizer, l2_penalty=1e-3)
    torch.manual_seed(1)
    plain_output = plain.training_step(batch)
    torch.manual_seed(1)
    penalised_output = penalised.training_step(batch)
    assert penalised_output.losses["l2"].item() > 0
    assert penalised_output.loss.item() == pytest.approx(plain_output.loss.item() + penalised_output.losses["l2"].item(), rel=1e-5)
    with pytest.raises(ConfigError, match="unknown loss"):
        CTCTask(small_ds2(tokenizer), tokenizer=tokenizer, losses={"attention": LossTerm()})
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        CTCTask(small_ds2(tokenizer))
