"""Text tokenizers: transcripts to token ids ``0..V-1`` and back.

Three kinds, one :class:`Tokenizer` protocol:

- :class:`CharacterTokenizer` (``kind: char``): every character is a token, a space included;
- :class:`WordTokenizer` (``kind: word``): tokens are the words between spaces;
- :class:`SentencePieceTokenizer` (``kind: sentencepiece``): BPE or unigram pieces trained
  from the training transcripts (needs the optional ``sentencepiece`` package).

Characters and words are sorted, so the same transcripts always give the same ids, and
SentencePiece is trained with deterministic settings, so they give the same model bytes.
A model predicting tokens has ``len(tokenizer) + 1`` classes: class 0 is its blank (CTC) or
end of sentence (attention), and token ``t`` is class ``t + 1``.

Text units (characters, or words for ``kind: word``) the tokenizer never met are an error,
unless the tokenizer was built with ``unknown="map"``: then it holds an ``<unk>`` token
(id 0) that stands for them, and that decodes as ``<unk>``.

A tokenizer is a small JSON document (:meth:`~Tokenizer.to_dict`; a SentencePiece model's
bytes go in as base64), so it travels inside every checkpoint and beside every experiment.

Example:

    >>> tokenizer = CharacterTokenizer.from_texts(["one two", "two"])
    >>> tokenizer.tokens, len(tokenizer)
    ([' ', 'e', 'n', 'o', 't', 'w'], 6)
    >>> tokenizer.encode("two one"), tokenizer.decode([4, 5, 3])
    ([4, 5, 3, 0, 3, 2, 1], 'two')
    >>> tokenizer_from_dict(tokenizer.to_dict()).to_dict() == tokenizer.to_dict()
    True
    >>> tokenizer.unknown_units("one, two!")
    [',', '!']
    >>> WordTokenizer.from_texts(["one two"], unknown="map").encode("two zero")
    [2, 0]
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import pydantic

from cadence.bounds import PositiveInt
from cadence.runtime.files import strict_json, write_bytes_atomic
from cadence.errors import ConfigError, DataError

__all__ = [
    "UNKNOWN_TOKEN",
    "CharacterTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "TokenizerOptions",
    "WordTokenizer",
    "build_tokenizer",
    "load_tokenizer",
    "tokenizer_from_dict",
]

UnknownPolicy = Literal["error", "map"]
UNKNOWN_TOKEN = "<unk>"
_UNKNOWN_POLICIES = ("error", "map")
_SENTENCEPIECE_SPACE = "\u2581"  # "▁": how SentencePiece writes a space inside its pieces


@runtime_checkable
class Tokenizer(Protocol):
    """What every tokenizer offers; ids run from 0 to ``len(tokenizer) - 1``."""

    kind: str  # "char", "word" or "sentencepiece"
    unknown: UnknownPolicy  # "map": unknown units become UNKNOWN_TOKEN; "error": they raise DataError
    tokens: list[str]  # token id -> its text, for display

    def __len__(self) -> int: ...

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; unknown units raise :class:`DataError` unless ``unknown == "map"``."""

    def decode(self, ids: Iterable[int]) -> str: ...

    def unknown_units(self, text: str) -> list[str]:
        """The units of ``text`` (characters, or words for ``kind: word``) not in the vocabulary, in order."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able document that :func:`tokenizer_from_dict` turns back into an equal tokenizer."""

    def save(self, path: str | Path) -> None: ...


@pydantic.dataclasses.dataclass(frozen=True, config=pydantic.ConfigDict(extra="forbid", allow_inf_nan=False))
class TokenizerOptions:
    """How a data builder gets its tokenizer (a recipe's ``data.tokenizer`` section).

    Without ``path`` the tokenizer is built from the training transcripts; ``vocab_size``
    (tokens, ``<unk>`` included) and ``model_type`` apply to ``kind: sentencepiece`` only.
    With ``path`` a saved tokenizer (``tokenizer.json`` of an earlier run) is loaded, and
    the other options must describe it, so the resolved recipe says what the run used.
    """

    kind: Literal["char", "word", "sentencepiece"] = "char"
    vocab_size: PositiveInt = 32
    model_type: Literal["bpe", "unigram"] = "unigram"
    unknown: UnknownPolicy = "error"
    path: str | None = None


def build_tokenizer(options: TokenizerOptions, texts: Iterable[str]) -> Tokenizer:
    """The tokenizer ``options`` ask for: loaded from ``options.path``, or built from ``texts``."""
    if options.path is None:
        if options.kind == "sentencepiece":
            return SentencePieceTokenizer.train(texts, options.vocab_size, options.model_type, options.unknown)
        tokenizer_class = CharacterTokenizer if options.kind == "char" else WordTokenizer
        return tokenizer_class.from_texts(texts, unknown=options.unknown)
    tokenizer = load_tokenizer(options.path)
    expected = {"kind": tokenizer.kind, "unknown": tokenizer.unknown}
    if isinstance(tokenizer, SentencePieceTokenizer):
        expected.update(vocab_size=len(tokenizer), model_type=tokenizer.model_type)
    wrong = {name: value for name, value in expected.items() if getattr(options, name) != value}
    if wrong:
        settings = ", ".join(f"{name}: {value}" for name, value in expected.items())
        raise ConfigError(
            f"data.tokenizer: {options.path} holds a tokenizer with {settings}, but the recipe says "
            + ", ".join(f"{name}: {getattr(options, name)}" for name in wrong)
            + f"; set data.tokenizer to {{path: {options.path}, {settings}}}, or drop path to build a new one"
        )
    return tokenizer


# ------------------------------------------------------------------------ characters and words


class _UnitTokenizer:
    """Shared by characters and words: a sorted list of units, ``<unk>`` first when mapped."""

    kind: str

    def __init__(self, tokens: Sequence[str], unknown: UnknownPolicy = "error") -> None:
        tokens = list(tokens)
        if unknown not in _UNKNOWN_POLICIES:
            raise ValueError(f"unknown must be 'error' or 'map', got {unknown!r}")
        if not tokens or len(set(tokens)) != len(tokens) or not all(self._is_unit(token) for token in tokens if token != UNKNOWN_TOKEN):
            raise DataError(f"a {self.kind} tokenizer needs unique {self.kind} tokens, got {tokens!r}")
        if unknown == "map" and UNKNOWN_TOKEN not in tokens:
            raise DataError(f"a {self.kind} tokenizer with unknown='map' needs the token {UNKNOWN_TOKEN!r}, got {tokens!r}")
        self.tokens = tokens
        self.unknown = unknown
        self.index = {token: position for position, token in enumerate(tokens)}
        self.unknown_id = self.index[UNKNOWN_TOKEN] if unknown == "map" else None

    @classmethod
    def from_texts(cls, texts: Iterable[str], unknown: UnknownPolicy = "error"):
        """Every unit met in ``texts``, sorted; ``<unk>`` first (id 0) with ``unknown="map"``."""
        units: set[str] = set()
        for text in texts:
            units.update(cls.split(text))
        if not units:
            raise DataError(f"no text to build a {cls.kind} tokenizer from; the training manifest needs 'text' fields that are not empty")
        units.discard(UNKNOWN_TOKEN)  # a transcript's own "<unk>" word means the unknown token
        return cls(([UNKNOWN_TOKEN] if unknown == "map" else []) + sorted(units), unknown)

    @staticmethod
    def split(text: str) -> list[str]:
        raise NotImplementedError

    @staticmethod
    def _is_unit(token: str) -> bool:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} tokens, unknown={self.unknown!r})"

    def unknown_units(self, text: str) -> list[str]:
        return [unit for unit in self.split(text) if unit not in self.index]

    def encode(self, text: str) -> list[int]:
        ids = [self.index.get(unit, self.unknown_id) for unit in self.split(text)]
        if self.unknown_id is None and None in ids:
            raise DataError(
                f"{self.unknown_units(text)!r} of {text!r} not in the {self.kind} tokenizer; build it from the "
                "training transcripts, fix the transcript, or build it with unknown: map"
            )
        return ids

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "unknown": self.unknown, "tokens": list(self.tokens)}

    def save(self, path: str | Path) -> None:
        _save(self, path)


class CharacterTokenizer(_UnitTokenizer):
    """One token per character; a space is a token, so ``decode(encode(text)) == text``.

        >>> CharacterTokenizer([" ", "a", "b"]).decode([1, 0, 2])
        'a b'
    """

    kind = "char"

    @staticmethod
    def split(text: str) -> list[str]:
        return list(text)

    @staticmethod
    def _is_unit(token: str) -> bool:
        return isinstance(token, str) and len(token) == 1

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.tokens[int(index)] for index in ids)


class WordTokenizer(_UnitTokenizer):
    """One token per word (split at whitespace); ``decode`` joins words with one space.

        >>> WordTokenizer(["four", "one", "three"]).encode("three one four")
        [2, 1, 0]
    """

    kind = "word"

    @staticmethod
    def split(text: str) -> list[str]:
        return text.split()

    @staticmethod
    def _is_unit(token: str) -> bool:
        return isinstance(token, str) and bool(token) and token.split() == [token]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.tokens[int(index)] for index in ids)


# ------------------------------------------------------------------------ SentencePiece


def _import_sentencepiece():
    """The optional sentencepiece package, imported only when a SentencePiece tokenizer is used."""
    try:
        import sentencepiece
    except ImportError:
        raise ConfigError(
            "tokenizer kind 'sentencepiece' needs the sentencepiece package: "
            "pip install sentencepiece (or pip install cadence[sentencepiece])"
        ) from None
    return sentencepiece


class SentencePieceTokenizer:
    """BPE or unigram pieces of a SentencePiece model.

    SentencePiece always keeps an ``<unk>`` piece, as its id 0 (cadence turns off its
    ``<s>``, ``</s>`` and ``<pad>``). With ``unknown="map"`` that piece is token 0; with
    ``unknown="error"`` it is left out and token ``t`` is piece ``t + 1``, so every id a
    model predicts is a real piece. A space shows as ``▁`` in :attr:`tokens`.
    """

    kind = "sentencepiece"

    def __init__(self, model: bytes, model_type: Literal["bpe", "unigram"], unknown: UnknownPolicy = "error") -> None:
        if unknown not in _UNKNOWN_POLICIES:
            raise ValueError(f"unknown must be 'error' or 'map', got {unknown!r}")
        sentencepiece = _import_sentencepiece()
        self.model = bytes(model)
        self.model_type = model_type
        self.unknown = unknown
        try:
            self._processor = sentencepiece.SentencePieceProcessor(model_proto=self.model)
        except RuntimeError as error:
            raise DataError(f"not a SentencePiece model ({error}); rebuild the tokenizer") from None
        processor = self._processor
        if processor.unk_id() != 0 or (processor.bos_id(), processor.eos_id(), processor.pad_id()) != (-1, -1, -1):
            raise DataError(
                "a SentencePiece model for cadence has <unk> as piece 0 and no <s>, </s> or <pad>; "
                "train it with SentencePieceTokenizer.train (data.tokenizer: {kind: sentencepiece})"
            )
        self._offset = 0 if unknown == "map" else 1  # piece id - token id
        pieces = [processor.id_to_piece(piece) for piece in range(processor.get_piece_size())]
        self.tokens = [UNKNOWN_TOKEN, *pieces[1:]][self._offset :]
        # character_coverage=1.0 gives every training character a piece of its own.
        self.characters = {character for piece in pieces[1:] for character in piece.replace(_SENTENCEPIECE_SPACE, " ")}

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        model_type: Literal["bpe", "unigram"] = "unigram",
        unknown: UnknownPolicy = "error",
    ) -> SentencePieceTokenizer:
        """Train in memory on ``texts``: ``vocab_size`` tokens (``<unk>`` included with ``unknown="map"``).

        Deterministic: one thread, every sentence used in the given order, no sampling, so the
        same texts give the same model bytes. No file is written.
        """
        sentencepiece = _import_sentencepiece()
        texts = [text for text in texts if text.strip()]
        if not texts:
            raise DataError("no text to train a SentencePiece tokenizer on; the training manifest needs 'text' fields that are not empty")
        offset = 0 if unknown == "map" else 1
        # character_coverage=1.0: every character (the space too) needs a piece of its own.
        smallest = len(set("".join(texts)) | {" "}) + 1 - offset
        if vocab_size < smallest:
            raise DataError(
                f"data.tokenizer.vocab_size: {vocab_size} is too small; the training transcripts need {smallest} "
                f"tokens for their characters{' and <unk>' if unknown == 'map' else ''} alone"
            )
        model = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(texts),
                model_writer=model,
                model_type=model_type,
                vocab_size=vocab_size + offset,  # the <unk> piece SentencePiece always keeps
                character_coverage=1.0,
                normalization_rule_name="identity",  # pieces are the transcripts' own characters
                unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
                unk_surface=UNKNOWN_TOKEN,
                num_threads=1,
                input_sentence_size=0, shuffle_input_sentence=False,
                max_sentence_length=1 << 20,  # longer sentences would be dropped, and their characters with them
                minloglevel=2,
            )
        except RuntimeError as error:
            limit = re.search(r"value <= (\d+)", str(error))
            if limit:
                raise DataError(
                    f"data.tokenizer.vocab_size: the training transcripts hold too few distinct pieces for {vocab_size} "
                    f"{model_type} tokens; SentencePiece suggests vocab_size <= {int(limit.group(1)) - offset}"
                ) from None
            raise DataError(f"SentencePiece could not train a {model_type} model of {vocab_size} tokens: {error}") from None
        return cls(model.getvalue(), model_type, unknown)

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({self.model_type}, {len(self)} tokens, unknown={self.unknown!r})"

    def unknown_units(self, text: str) -> list[str]:
        return [character for character in text if character not in self.characters and character != " "]

    def encode(self, text: str) -> list[int]:
        if self.unknown == "error":
            unknown = self.unknown_units(text)
            if unknown:
                raise DataError(
                    f"{unknown!r} of {text!r} not in the SentencePiece tokenizer; train it on the training "
                    "transcripts, fix the transcript, or build it with unknown: map"
                )
        return [piece - self._offset for piece in self._processor.encode(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._processor.decode([int(index) + self._offset for index in ids])

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "unknown": self.unknown, "model_type": self.model_type,
            "model": base64.b64encode(self.model).decode("ascii"),
        }

    def save(self, path: str | Path) -> None:
        _save(self, path)


# ------------------------------------------------------------------------ documents and files

_KINDS = {"char": CharacterTokenizer, "word": WordTokenizer, "sentencepiece": SentencePieceTokenizer}


def tokenizer_from_dict(document: dict[str, Any]) -> Tokenizer:
    """The tokenizer a :meth:`~Tokenizer.to_dict` document describes."""
    if not isinstance(document, dict) or document.get("kind") not in _KINDS:
        kind = document.get("kind") if isinstance(document, dict) else document
        raise DataError(f"not a tokenizer document: kind {kind!r}; expected one of {', '.join(_KINDS)}")
    try:
        if document["kind"] == "sentencepiece":
            model = base64.b64decode(document["model"], validate=True)
            return SentencePieceTokenizer(model, document["model_type"], document["unknown"])
        return _KINDS[document["kind"]](document["tokens"], document["unknown"])
    except (KeyError, TypeError, ValueError, binascii.Error) as error:
        raise DataError(f"damaged {document['kind']} tokenizer document ({type(error).__name__}: {error}); rebuild the tokenizer") from None


def _save(tokenizer: Tokenizer, path: str | Path) -> None:
    text = strict_json(tokenizer.to_dict(), indent=1, ensure_ascii=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer written by :meth:`~Tokenizer.save`."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: tokenizer file not found; a run saves its tokenizer as data/tokenizer.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: cannot read tokenizer ({error}); expected the JSON a tokenizer's save() writes") from None
    try:
        return tokenizer_from_dict(document)
    except DataError as error:
        raise DataError(f"{path}: {error}") from None
