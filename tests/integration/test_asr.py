"""Speech recognition end to end on FSDD connected digits: tiny real trainings of the three
recipes, then `cadence eval` and `cadence transcribe` on what they saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cadence
from cadence.commands.cli import main
from cadence.corpora.connected_digits import prepare_connected_digits
from cadence.data.manifest import read_manifest

REPOSITORY = Path(__file__).resolve().parents[2]
RECIPES = REPOSITORY / "recipes" / "fsdd"
# A corpus of its own (60/12/12 utterances, generated once into the cache), 2 epochs of tiny models.
TINY_DATA = ["data.corpus_sizes=[60,12,12]", "data.batching.max_frames=6000", "trainer.max_epochs=2", "trainer.progress_bar=false"]
TINY_MODELS = {
    "asr_ds2.yaml": ["model.rnn_hidden=24", "model.rnn_layers=1", "model.conv_channels=4"],
    "asr_las.yaml": ["model.listener_hidden=16", "model.speller_hidden=32", "model.attention_size=16", "model.embedding_size=16"],
    "asr_tds.yaml": ["model.channels=2", "model.channel_growth=1", "model.blocks_per_group=1", "model.key_value_size=32"],
}


def train(recipe: str, directory: Path, *extra: str) -> dict:
    assert main(["train", str(RECIPES / recipe), *TINY_DATA, *TINY_MODELS[recipe], *extra, "--exp-dir", str(directory)]) == 0
    return json.loads((directory / "results.json").read_text())


@pytest.fixture(scope="module")
def ds2_run(tmp_path_factory, fsdd_root):
    directory = tmp_path_factory.mktemp("asr") / "ds2"
    return directory, train("asr_ds2.yaml", directory, "trainer.train_metrics_every=2")


def test_ds2_run_reports_error_rates_and_writes_hypotheses(ds2_run):
    directory, results = ds2_run
    test = results["test"]
    assert test["test/wer_reference_words"] > 12  # every test utterance has 2-7 digits
    errors = test["test/wer_substitutions"] + test["test/wer_deletions"] + test["test/wer_insertions"]
    assert test["test/wer"] == pytest.approx(errors / test["test/wer_reference_words"])
    lines = [json.loads(line) for line in (directory / "hypotheses" / "test.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and {"id", "reference", "hypothesis", "word_errors", "reference_words"} <= set(lines[0])
    # Per-utterance errors add up to the corpus counts.
    assert sum(line["word_errors"] for line in lines) == errors
    assert (directory / "hypotheses" / "val.jsonl").is_file()
    assert json.loads((directory / "data" / "tokenizer.json").read_text())["kind"] == "word"


def test_eval_command_reproduces_the_test_metrics(ds2_run, capsys):
    directory, results = ds2_run
    capsys.readouterr()
    assert main(["eval", str(directory), "--split", "test", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metrics"] == pytest.approx(results["test"])
    assert report["checkpoint"] == results["final_checkpoint"]
    assert (directory / "hypotheses" / f"eval-{Path(report['checkpoint']).name}-test.jsonl").is_file()


def test_transcribe_gives_the_evaluation_hypotheses_and_reads_fsdd_recordings(ds2_run, fsdd_root, capsys):
    directory, _ = ds2_run
    hypotheses = {line["id"]: line["hypothesis"] for line in map(json.loads, (directory / "hypotheses" / "test.jsonl").open())}
    test_manifest = prepare_connected_digits(None, sizes=(60, 12, 12))["test"]  # the run's corpus, from the cache
    entries = read_manifest(test_manifest)[:3]
    corpus = test_manifest.parent
    recording = next(Path(fsdd_root).rglob("*.wav"))
    capsys.readouterr()
    assert main(["transcribe", str(directory), *[str(corpus / entry.audio) for entry in entries], str(recording)]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in printed[:3]] == [hypotheses[entry.id] for entry in entries]
    vocabulary = set(cadence.load(directory).tokenizer.tokens)
    assert printed[3]["audio"] == str(recording) and set(printed[3]["text"].split()) <= vocabulary


@pytest.mark.parametrize("tokenizer", [["data.tokenizer.kind=char"], ["data.tokenizer.kind=sentencepiece", "data.tokenizer.vocab_size=20"]])
def test_character_and_sentencepiece_tokenizers_train_and_travel_in_the_checkpoint(tokenizer, tmp_path, fsdd_root):
    directory = tmp_path / "run"
    results = train("asr_ds2.yaml", directory, "trainer.max_epochs=1", *tokenizer)
    saved = json.loads((directory / "data" / "tokenizer.json").read_text())
    assert saved["kind"] == tokenizer[0].split("=")[1]
    task = cadence.load(directory)
    assert task.tokenizer.to_dict() == saved  # from the checkpoint alone
    assert task.model.head.out_features == len(task.tokenizer) + 1
    assert results["test"]["test/cer_reference_characters"] > 0


def training_error_rates(directory: Path) -> list[dict]:
    lines = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if "train/wer" in line]


def test_text_tasks_score_training_batches_every_n_steps(ds2_run):
    directory, results = ds2_run
    scored = training_error_rates(directory)
    # A WER and CER every 2nd update, of the greedy hypotheses of that update's batch (the
    # batches in between are not decoded).
    assert [line["step"] for line in scored] == list(range(2, results["global_step"] + 1, 2))
    assert all(0 <= line["train/wer"] and 0 <= line["train/cer"] for line in scored)
    assert all(line["train/wer_reference_words"] >= 2 for line in scored)  # each utterance has 2-7 digits


@pytest.mark.parametrize("recipe", ["asr_las.yaml", "asr_tds.yaml"])
def test_attention_recipes_train_and_decode(recipe, tmp_path, fsdd_root):
    results = train(recipe, tmp_path / "run", "trainer.max_epochs=1", "trainer.train_metrics_every=1")
    assert results["test"]["test/loss_attention"] > 0 and results["test"]["test/loss_ctc"] > 0
    assert 0 <= results["test"]["test/cer"] and results["test"]["test/wer_reference_words"] > 0
    assert len(training_error_rates(tmp_path / "run")) == results["global_step"]  # every update scored, greedily


def test_asr_recipe_resumes_exactly(tmp_path, fsdd_root, capsys):
    # Scheduled sampling draws random numbers inside the step: a resumed run must draw the same.
    # Validations every 2 updates: the run is stopped at step 3, between two of them.
    overrides = [*TINY_DATA, *TINY_MODELS["asr_las.yaml"], "task.scheduled_sampling=0.3", "trainer.validate_every_steps=2"]
    assert main(["verify-resume", str(RECIPES / "asr_las.yaml"), *overrides, "--steps", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["identical"]


def test_speed_perturbation_resumes_exactly(tmp_path, fsdd_root, capsys):
    # A factor is drawn per utterance, with SpecAugment's masks after it: a resumed run must draw the same.
    features = ("features=[{name: speed_perturb, factors: [0.8, 1.0, 1.25]}, {name: log_mel, n_mels: 40}, "
                "{name: normalize, mode: utterance}, {name: spec_augment, freq_masks: 2, freq_width: 8, time_masks: 2}]")
    overrides = [*TINY_DATA, *TINY_MODELS["asr_ds2.yaml"], features]
    assert main(["verify-resume", str(RECIPES / "asr_ds2.yaml"), *overrides, "--steps", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["identical"]


def test_transcribe_and_eval_name_what_is_wrong(ds2_run, tmp_path, capsys):
    directory, _ = ds2_run
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF0000WAVEfmt not really audio")
    assert main(["transcribe", str(directory), str(broken)]) == 2
    assert str(broken) in capsys.readouterr().err
    assert main(["eval", str(directory / "nowhere")]) == 2
    assert "no checkpoint or experiment folder" in capsys.readouterr().err
