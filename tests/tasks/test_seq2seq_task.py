import pytest
import torch

from cadence.data.tokenizers import WordTokenizer
from cadence.errors import ConfigError
from cadence.losses import LossTerm
from cadence.models.listen_attend_spell import ListenAttendSpell
from cadence.models.tds import TDSSeq2Seq
from cadence.tasks import DecodingOptions, Seq2SeqTask
from text_batches import WORDS, text_batch


def small_las(tokenizer, ctc_head=True):
    torch.manual_seed(0)
    return ListenAttendSpell(
        len(tokenizer) + 1, n_mels=16, listener_hidden=24, pyramid_layers=2, speller_hidden=48,
        embedding_size=16, attention_size=24, ctc_head=ctc_head, dropout=0.0,
    )


def train(task, batch, steps=60, lr=1e-2):
    optimizer = torch.optim.Adam(task.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        output = task.training_step(batch)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    return losses, output


def test_decoder_sequences_start_and_end_with_class_zero():
    targets = torch.tensor([[3, 4, 5], [2, 0, 0]])
    previous, outputs, lengths = Seq2SeqTask.decoder_sequences(targets, torch.tensor([3, 1]))
    assert previous.tolist() == [[0, 3, 4, 5], [0, 2, 0, 0]]
    assert outputs.tolist() == [[3, 4, 5, 0], [2, 0, 0, 0]]
    assert lengths.tolist() == [4, 2]


def test_las_with_ctc_head_learns_a_tiny_batch_and_every_decoder_reads_it_back():
    tokenizer = WordTokenizer.from_texts(WORDS)
    task = Seq2SeqTask(
        small_las(tokenizer), tokenizer=tokenizer, label_smoothing=0.1,
        losses={"attention": LossTerm(weight=0.7), "ctc": LossTerm(weight=0.3)},
    )
    batch = text_batch(tokenizer, WORDS)
    losses, output = train(task, batch)
    assert set(output.losses) == {"attention", "ctc"}
    assert losses[-1] < 0.3 * losses[0]
    task.eval()
    with torch.no_grad():
        for decoding in (DecodingOptions(), DecodingOptions(method="beam", beam_size=3),
                         DecodingOptions(method="beam", beam_size=3, ctc_weight=0.3, length_penalty=0.5)):
            task.decoding = decoding
            evaluation = task.validation_step(batch)
            assert evaluation.predictions == WORDS, decoding
    assert evaluation.targets == WORDS


def test_scheduled_sampling_feeds_own_predictions_only_in_training():
    tokenizer = WordTokenizer.from_texts(WORDS)
    batch = text_batch(tokenizer, WORDS)
    forced = Seq2SeqTask(small_las(tokenizer, ctc_head=False), tokenizer=tokenizer)
    sampled = Seq2SeqTask(small_las(tokenizer, ctc_head=False), tokenizer=tokenizer, scheduled_sampling=1.0)
    # An untrained decoder's guesses differ from the references, so the losses differ...
    assert forced.training_step(batch).loss.item() != pytest.approx(sampled.training_step(batch).loss.item())
    # ...but evaluation always feeds the references.
    forced.eval(), sampled.eval()
    with torch.no_grad():
        assert forced.validation_step(batch).loss.item() == pytest.approx(sampled.validation_step(batch).loss.item())
    losses, _ = train(sampled, batch, steps=40)
    assert losses[-1] < 0.5 * losses[0]


def test_tds_learns_a_tiny_batch():
    tokenizer = WordTokenizer.from_texts(WORDS)
    torch.manual_seed(0)
    model = TDSSeq2Seq(len(tokenizer) + 1, n_mels=16, groups=2, channels=4, channel_growth=2, blocks_per_group=1,
                       kernel_size=5, key_value_size=48, dropout=0.0)
    task = Seq2SeqTask(model, tokenizer=tokenizer)
    losses, _ = train(task, text_batch(tokenizer, WORDS))
    assert losses[-1] < 0.3 * losses[0]


def test_configuration_errors_name_the_fix():
    tokenizer = WordTokenizer.from_texts(WORDS)
    with pytest.raises(ConfigError, match="no CTC head"):
        Seq2SeqTask(small_las(tokenizer, ctc_head=False), tokenizer=tokenizer, losses={"attention": LossTerm(), "ctc": LossTerm()})
    with pytest.raises(ConfigError, match="joint decoding needs"):
        Seq2SeqTask(small_las(tokenizer, ctc_head=False), tokenizer=tokenizer, decoding=DecodingOptions(method="beam", ctc_weight=0.5))
    with pytest.raises(ConfigError, match="set decoding.method: beam"):
        Seq2SeqTask(small_las(tokenizer), tokenizer=tokenizer, decoding=DecodingOptions(ctc_weight=0.5))
    with pytest.raises(ValueError, match="scheduled_sampling"):
        Seq2SeqTask(small_las(tokenizer), tokenizer=tokenizer, scheduled_sampling=1.5)


def test_an_evaluation_only_loss_is_reported_but_not_trained():
    tokenizer = WordTokenizer.from_texts(WORDS)
    task = Seq2SeqTask(
        small_las(tokenizer), tokenizer=tokenizer,
        losses={"attention": LossTerm(weight=0.5), "ctc": LossTerm(weight=0.3, evaluation_only=True)},
    )
    batch = text_batch(tokenizer, WORDS)
    output = task.training_step(batch)
    assert set(output.losses) == {"attention", "ctc"}
    assert output.loss.item() == pytest.approx(0.5 * output.losses["attention"].item())
    output.loss.backward()
    assert all(parameter.grad is None for parameter in task.model.ctc_head.parameters())
