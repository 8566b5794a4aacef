"""Tokenizers: round trips, documents, deterministic SentencePiece training, unknown units, builder facts."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydantic
import pytest
import soundfile

from cadence.corpora.builders import fsdd
from cadence.data.builders import manifests
from cadence.data.manifest import Manifest, ManifestEntry, write_manifest
from cadence.data.processor import AudioDataProcessor
from cadence.data.tokenizers import (
    UNKNOWN_TOKEN,
    CharacterTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    TokenizerOptions,
    WordTokenizer,
    build_tokenizer,
    load_tokenizer,
    tokenizer_from_dict,
)
from cadence.errors import ConfigError, DataError
from cadence.registry import schema_from_signature

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
REPOSITORY = Path(__file__).resolve().parents[2]


def connected_digits(count: int, seed: int = 0) -> list[str]:
    """Transcripts like the connected-digits corpus: 1 to 7 digit words, one space apart."""
    generator = np.random.default_rng(seed)
    return [" ".join(WORDS[digit] for digit in generator.integers(0, 10, generator.integers(1, 8))) for _ in range(count)]


TRANSCRIPTS = connected_digits(300)
SENTENCEPIECE_CASES = [("bpe", "error"), ("bpe", "map"), ("unigram", "error"), ("unigram", "map")]


@pytest.fixture(scope="module")
def trained() -> dict[tuple[str, str], SentencePieceTokenizer]:
    return {
        (model_type, unknown): SentencePieceTokenizer.train(TRANSCRIPTS, 24, model_type, unknown)
        for model_type, unknown in SENTENCEPIECE_CASES
    }


def all_tokenizers(trained) -> list[Tokenizer]:
    return [
        CharacterTokenizer.from_texts(TRANSCRIPTS), CharacterTokenizer.from_texts(TRANSCRIPTS, unknown="map"),
        WordTokenizer.from_texts(TRANSCRIPTS), WordTokenizer.from_texts(TRANSCRIPTS, unknown="map"), *trained.values(),
    ]


# ---------------------------------------------------------------------------- round trips and documents


def test_every_kind_round_trips_the_transcripts_with_ids_below_its_length(trained) -> None:
    for tokenizer in all_tokenizers(trained):
        assert isinstance(tokenizer, Tokenizer) and len(tokenizer.tokens) == len(tokenizer)
        for text in TRANSCRIPTS[:50] + ["three one four"]:
            ids = tokenizer.encode(text)
            assert all(0 <= index < len(tokenizer) for index in ids) and tokenizer.decode(ids) == text, tokenizer


def test_characters_and_words_are_sorted_units_so_order_does_not_change_ids() -> None:
    characters = CharacterTokenizer.from_texts(["three one four", "two"])
    assert characters.tokens == [" ", "e", "f", "h", "n", "o", "r", "t", "u", "w"]
    assert characters.to_dict() == CharacterTokenizer.from_texts(["two", "three one four"]).to_dict()
    words = WordTokenizer.from_texts(["three one four", "two"])
    assert words.tokens == ["four", "one", "three", "two"] and words.encode("three one four") == [2, 1, 0]
    assert words.kind == "word" and characters.kind == "char"


def test_unknown_map_puts_unk_first_and_error_leaves_it_out(trained) -> None:
    assert CharacterTokenizer.from_texts(["ab"], unknown="map").tokens == [UNKNOWN_TOKEN, "a", "b"]
    assert WordTokenizer.from_texts(["a <unk> b"], unknown="map").tokens == [UNKNOWN_TOKEN, "a", "b"]
    for (model_type, unknown), tokenizer in trained.items():
        assert len(tokenizer) == 24 and tokenizer.model_type == model_type
        assert (tokenizer.tokens[0] == UNKNOWN_TOKEN) == (unknown == "map")
        assert not {UNKNOWN_TOKEN, "<s>", "</s>", "<pad>"} & set(tokenizer.tokens[unknown == "map" :])
    # One model either way: without <unk>, token t is token t + 1 of the same model with it.
    with_unknown = SentencePieceTokenizer.train(TRANSCRIPTS, 25, "unigram", unknown="map")
    assert with_unknown.model == trained["unigram", "error"].model
    assert with_unknown.tokens[1:] == trained["unigram", "error"].tokens
    assert trained["bpe", "error"].tokens != trained["unigram", "error"].tokens


def test_to_dict_and_back_is_exact_through_json_and_files(trained, tmp_path) -> None:
    for number, tokenizer in enumerate(all_tokenizers(trained)):
        document = tokenizer.to_dict()
        assert json.loads(json.dumps(document)) == document
        again = tokenizer_from_dict(document)
        assert type(again) is type(tokenizer) and again.to_dict() == document and again.tokens == tokenizer.tokens
        assert again.encode(TRANSCRIPTS[7]) == tokenizer.encode(TRANSCRIPTS[7])
        tokenizer.save(tmp_path / f"{number}.json")
        assert load_tokenizer(tmp_path / f"{number}.json").to_dict() == document
    model = trained["bpe", "error"]
    assert tokenizer_from_dict(model.to_dict()).model == model.model  # the model bytes travel as base64


def test_damaged_documents_and_files_are_data_errors(trained, tmp_path) -> None:
    with pytest.raises(DataError, match=r"kind 'letters'; expected one of char, word, sentencepiece"):
        tokenizer_from_dict({"kind": "letters", "tokens": ["a"]})
    with pytest.raises(DataError, match=r"damaged char tokenizer document"):
        tokenizer_from_dict({"kind": "char", "tokens": ["a"]})
    with pytest.raises(DataError, match=r"unique char tokens"):
        tokenizer_from_dict({"kind": "char", "unknown": "error", "tokens": ["a", "a"]})
    with pytest.raises(DataError, match=r"not a SentencePiece model"):
        tokenizer_from_dict({**trained["bpe", "map"].to_dict(), "model": "Z2FyYmFnZQ=="})
    with pytest.raises(DataError, match=r"tokenizer file not found"):
        load_tokenizer(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match=r"broken.json: cannot read tokenizer"):
        load_tokenizer(tmp_path / "broken.json")


# ---------------------------------------------------------------------------- SentencePiece training


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_training_gives_the_same_bytes_every_time_and_writes_no_file(model_type, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = SentencePieceTokenizer.train(TRANSCRIPTS, 24, model_type)
    second = SentencePieceTokenizer.train(TRANSCRIPTS, 24, model_type)
    assert first.model == second.model and list(tmp_path.iterdir()) == []
    # And in a fresh process, where nothing of this one's state is shared.
    program = (
        "import hashlib, sys; from cadence.data.tokenizers import SentencePieceTokenizer; "
        f"texts = sys.stdin.read().splitlines(); model = SentencePieceTokenizer.train(texts, 24, {model_type!r}).model; "
        "print(hashlib.sha256(model).hexdigest())"
    )
    completed = subprocess.run(
        [sys.executable, "-c", program], input="\n".join(TRANSCRIPTS), capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    )
    assert completed.stdout.strip() == hashlib.sha256(first.model).hexdigest()


def test_a_vocab_size_the_transcripts_cannot_fill_is_a_clear_error() -> None:
    with pytest.raises(DataError, match=r"vocab_size: the training transcripts hold too few distinct pieces for 5000 unigram "
                       r"tokens; SentencePiece suggests vocab_size <= \d+"):
        SentencePieceTokenizer.train(TRANSCRIPTS, 5000, "unigram")
    # 15 letters and the space; <unk> too when unknown characters map to it.
    assert len(SentencePieceTokenizer.train(TRANSCRIPTS, 16, "bpe")) == 16
    with pytest.raises(DataError, match=r"vocab_size: 16 is too small; the training transcripts need 17 tokens for their characters and <unk> alone"):
        SentencePieceTokenizer.train(TRANSCRIPTS, 16, "bpe", unknown="map")
    with pytest.raises(DataError, match=r"no text to train"):
        SentencePieceTokenizer.train(["", "  "], 20)


def test_missing_sentencepiece_says_how_to_install_it(trained, monkeypatch) -> None:
    document = trained["unigram", "error"].to_dict()
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # makes `import sentencepiece` fail
    for attempt in (lambda: SentencePieceTokenizer.train(TRANSCRIPTS, 24), lambda: tokenizer_from_dict(document)):
        with pytest.raises(ConfigError, match=r"pip install sentencepiece \(or pip install cadence\[sentencepiece\]\)"):
            attempt()
    assert len(build_tokenizer(TokenizerOptions(kind="word"), TRANSCRIPTS)) == 10  # the other kinds need no package


# ---------------------------------------------------------------------------- unknown units


def text_manifest(path: Path, texts: list[str]) -> Manifest:
    entries = [ManifestEntry(id=f"u{index}", audio=path.parent / f"u{index}.wav", duration=1.0, text=text) for index, text in enumerate(texts)]
    write_manifest(path, entries)
    return Manifest.read(path)


@pytest.mark.parametrize("kind", ["char", "sentencepiece"])
def test_unknown_characters_are_one_error_listing_each_with_count_and_first_utterance(kind, tmp_path) -> None:
    tokenizer = build_tokenizer(TokenizerOptions(kind=kind, vocab_size=20), TRANSCRIPTS)
    manifest = text_manifest(tmp_path / "valid.jsonl", ["three one", "thrée one!", "four", "é!", "zéro"])
    with pytest.raises(DataError) as caught:
        AudioDataProcessor(8000, target="text", tokenizer=tokenizer).encode_targets(manifest)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'valid.jsonl'}: 2 characters of the transcripts are not in the {kind} tokenizer: ")
    assert f"'é' 3x, first in {manifest.where(1)}; '!' 2x, first in {manifest.where(1)}." in message
    assert "Rebuild the tokenizer from training transcripts" in message and "data.tokenizer.unknown: map" in message


def test_unknown_words_are_listed_as_words(tmp_path) -> None:
    manifest = text_manifest(tmp_path / "test.jsonl", ["one two", "ten one", "eleven ten"])
    with pytest.raises(DataError, match=r"2 words .* word tokenizer: 'ten' 2x, first in .*'u1'.*; 'eleven' 1x, first in .*'u2'"):
        AudioDataProcessor(8000, target="text", tokenizer=WordTokenizer(WORDS)).encode_targets(manifest)


@pytest.mark.parametrize("kind", ["char", "word", "sentencepiece"])
def test_unknown_map_reads_unknown_units_as_unk_and_warns_how_many(kind, tmp_path, caplog) -> None:
    tokenizer = build_tokenizer(TokenizerOptions(kind=kind, vocab_size=20, unknown="map"), TRANSCRIPTS)
    unit = "!" if kind != "word" else "ten"
    manifest = text_manifest(tmp_path / "valid.jsonl", [f"three {unit} one", "four", f"{unit} {unit}"])
    logger = logging.getLogger("cadence")
    logger.addHandler(caplog.handler)
    try:
        targets = AudioDataProcessor(8000, target="text", tokenizer=tokenizer).encode_targets(manifest)
    finally:
        logger.removeHandler(caplog.handler)
    units = "words" if kind == "word" else "characters"
    assert f"valid.jsonl: 3 {units} not in the tokenizer read as <unk>: '{unit}' 3x" in caplog.text
    first = targets[0].tolist()
    assert 0 in first and tokenizer.decode(first) == "three <unk> one"
    assert tokenizer.unknown_units(f"three {unit} one") == [unit]


# ---------------------------------------------------------------------------- the data builder


@pytest.fixture
def text_corpus(tmp_path: Path) -> dict[str, Path]:
    """Train and valid manifests of three tiny 8 kHz tone files with digit transcripts."""
    tone = (0.3 * np.sin(np.arange(4000) / 3)).astype(np.float32)
    for index in range(3):
        soundfile.write(tmp_path / f"u{index}.wav", tone, 8000)
    texts = {"train": ["three one four", "one five nine", "two six"], "valid": ["four one", "nine", "six two"]}
    for split, lines in texts.items():
        write_manifest(tmp_path / f"{split}.jsonl", [
            ManifestEntry(id=f"{split}{index}", audio=tmp_path / f"u{index}.wav", duration=0.5, text=text) for index, text in enumerate(lines)
        ])
    return {split: tmp_path / f"{split}.jsonl" for split in texts}


def build_text_data(corpus: dict[str, Path], work_dir: Path, **options):
    return manifests(
        work_dir, 0, None, train=str(corpus["train"]), valid=str(corpus["valid"]), target="text",
        tokenizer=TokenizerOptions(**options), sample_rate=8000,
    )


@pytest.mark.parametrize("kind", ["char", "word", "sentencepiece"])
def test_the_builder_gives_the_tokenizer_and_one_class_more_and_saves_it(kind, text_corpus, tmp_path) -> None:
    data = build_text_data(text_corpus, tmp_path / "data", kind=kind, vocab_size=16)
    tokenizer = data.facts["tokenizer"]
    assert tokenizer.kind == kind and set(data.facts) == {"tokenizer", "num_classes", "sample_rate"}
    assert data.facts["num_classes"] == len(tokenizer) + 1 and data.facts["sample_rate"] == 8000
    assert load_tokenizer(tmp_path / "data" / "tokenizer.json").to_dict() == tokenizer.to_dict()
    batch = next(iter(data.valid))
    for row, utterance_id in enumerate(batch.ids):
        ids = batch.targets[row, : batch.target_lengths[row]].tolist()
        assert tokenizer.decode(ids) == {"valid0": "four one", "valid1": "nine", "valid2": "six two"}[utterance_id]


def test_the_builder_loads_a_saved_tokenizer_that_the_options_describe(text_corpus, tmp_path) -> None:
    saved = build_text_data(text_corpus, tmp_path / "first", kind="sentencepiece", vocab_size=20, model_type="bpe").facts["tokenizer"]
    path = str(tmp_path / "first" / "tokenizer.json")
    loaded = build_text_data(text_corpus, tmp_path / "second", kind="sentencepiece", vocab_size=20, model_type="bpe", path=path)
    assert loaded.facts["tokenizer"].model == saved.model
    assert (tmp_path / "second" / "tokenizer.json").read_bytes() == Path(path).read_bytes()
    with pytest.raises(ConfigError, match=r"holds a tokenizer with kind: sentencepiece, unknown: error, vocab_size: 20, model_type: bpe, "
                       r"but the recipe says kind: char, vocab_size: 32, model_type: unigram; set data.tokenizer to \{path: "):
        build_text_data(text_corpus, tmp_path / "third", path=path)


def test_the_builder_rejects_unknown_characters_of_the_valid_manifest_at_load(text_corpus, tmp_path) -> None:
    lines = text_corpus["valid"].read_text().replace("six two", "six twö")
    text_corpus["valid"].write_text(lines)
    with pytest.raises(DataError, match=r"valid.jsonl: 1 characters .*: 'ö' 1x, first in .*utterance 'valid2'"):
        build_text_data(text_corpus, tmp_path / "data")
    data = build_text_data(text_corpus, tmp_path / "data", unknown="map")
    assert data.facts["tokenizer"].tokens[0] == UNKNOWN_TOKEN


def test_tokenizer_options_are_a_typed_recipe_section() -> None:
    schema = schema_from_signature(manifests, exclude=("work_dir", "seed", "experiment_dir"))
    parameters = schema.model_validate({"train": "t.jsonl", "tokenizer": {"kind": "sentencepiece", "vocab_size": 64, "model_type": "bpe"}})
    assert parameters.tokenizer == TokenizerOptions(kind="sentencepiece", vocab_size=64, model_type="bpe")
    for wrong in ({"kind": "bytes"}, {"vocab_size": 0}, {"unknown": "ignore"}, {"vocab": 32}):
        with pytest.raises(pydantic.ValidationError):
            schema.model_validate({"train": "t.jsonl", "tokenizer": wrong})
    fsdd_schema = schema_from_signature(fsdd, exclude=("work_dir", "seed", "experiment_dir"))
    assert fsdd_schema.model_validate({}).tokenizer.kind == "word"  # connected digits: one token per digit word
