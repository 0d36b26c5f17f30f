"""SentencePiece tokenizer with the RNN-T id layout: 0 = blank (``<blk>``), 1 = ``<unk>``, pieces >= 2.

SentencePiece reserves ``pad_id=0`` for the blank, so no text ever encodes to 0; BOS/EOS are disabled. Text is
upper-cased on encode and decode returns upper case (transcripts are upper case, LibriSpeech style).

    tok = Tokenizer.train(texts, "/tmp/spm", vocab_size=256)       # writes /tmp/spm.model, /tmp/spm.vocab
    ids = tok.encode("HELLO WORLD")                                 # list[int], all >= 1
    assert tok.decode(ids) == "HELLO WORLD"
"""
from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Sequence

import sentencepiece as spm

from omni_tf import fileio

BLANK_ID = 0
UNK_ID = 1
BLANK_PIECE = "<blk>"
MODEL_TYPES = ("unigram", "bpe", "char", "word")


class Tokenizer:
    """Loads a SentencePiece model trained by ``Tokenizer.train`` (or with the same id layout)."""

    def __init__(self, model_path: str):
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"SentencePiece model not found: {model_path}")
        self.model_path = model_path
        self._sp = spm.SentencePieceProcessor(model_file=model_path)
        if self._sp.pad_id() != BLANK_ID or self._sp.id_to_piece(BLANK_ID) != BLANK_PIECE:
            raise ValueError(f"{model_path}: id 0 must be the blank piece {BLANK_PIECE!r} (pad_id=0); "
                             f"got pad_id={self._sp.pad_id()}, piece 0 = {self._sp.id_to_piece(0)!r}")
        if self._sp.unk_id() != UNK_ID or self._sp.bos_id() != -1 or self._sp.eos_id() != -1:
            raise ValueError(f"{model_path}: expected unk_id=1 and no BOS/EOS; got unk={self._sp.unk_id()}, "
                             f"bos={self._sp.bos_id()}, eos={self._sp.eos_id()}")

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def blank_id(self) -> int:
        return BLANK_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    def id_to_piece(self, token_id: int) -> str:
        if not 0 <= token_id < self.vocab_size:
            raise IndexError(f"token id {token_id} outside [0, {self.vocab_size})")
        return self._sp.id_to_piece(int(token_id))

    def encode(self, text: str) -> list[int]:
        """Upper-cased, whitespace-normalized text -> ids (never 0)."""
        return self._sp.encode(" ".join(text.upper().split()), out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode([" ".join(t.upper().split()) for t in texts], out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> upper-case text; blanks (0) are dropped, so raw decoder output can be passed."""
        return self._sp.decode([int(i) for i in ids if int(i) != BLANK_ID]).upper()

    @classmethod
    def train(cls, texts: Iterable[str], model_prefix: str, vocab_size: int, model_type: str = "unigram",
              hard_vocab_limit: bool = True) -> Tokenizer:
        """Trains on ``texts`` (upper-cased), writes ``<model_prefix>.model`` / ``.vocab``; returns the model.

        ``vocab_size`` counts <blk> and <unk>. With ``hard_vocab_limit=False`` SentencePiece may stop below
        it; with True a vocabulary the data cannot fill raises ValueError saying the largest size it allows.
        """
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
        lines = [" ".join(t.upper().split()) for t in texts]
        lines = [t for t in lines if t]
        if not lines:
            raise ValueError(f"no non-empty texts to train the tokenizer {model_prefix}")
        chars = {c for t in lines for c in t if c != " "}
        if vocab_size < len(chars) + 2:
            raise ValueError(f"vocab_size={vocab_size} < {len(chars)} distinct characters + <blk> + <unk>; "
                             "full character coverage needs more")
        if os.path.dirname(model_prefix):
            os.makedirs(os.path.dirname(model_prefix), exist_ok=True)
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
                model_type=model_type, character_coverage=1.0, pad_id=BLANK_ID, pad_piece=BLANK_PIECE,
                unk_id=UNK_ID, bos_id=-1, eos_id=-1, hard_vocab_limit=hard_vocab_limit,
                input_sentence_size=2_000_000, shuffle_input_sentence=True, num_threads=1, minloglevel=2)
        except RuntimeError as e:
            match = re.search(r"<= (\d+)", str(e))
            hint = f" (at most {match.group(1)} for this data)" if match else ""
            raise ValueError(f"cannot train a {vocab_size}-piece {model_type} tokenizer on {len(lines)} texts"
                             f"{hint}; lower --vocab_size or pass hard_vocab_limit=False: {e}") from e
        sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
        fileio.write_text(model_prefix + ".vocab", "".join(
            f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size())))
        fileio.write_bytes(model_prefix + ".model", model.getvalue())  # atomic; last: the model is the output
        return cls(model_prefix + ".model")


class VocabSizeError(ValueError):
    """The tokenizer's piece count differs from the model's output size."""


def check_model_vocab(tokenizer: Tokenizer, model_vocab_size: int, model_source: str) -> None:
    """Checks, at start-up, that a model with ``model_vocab_size`` outputs fits ``tokenizer``.

    A tokenizer with more pieces makes label ids index past the predictor embedding (on CPU a gather error
    on the first step; on GPU out-of-range gathers silently read zeros); one with fewer lets the model emit
    ids it cannot decode. ``model_source`` names where the model size comes from (a config field, a file).

    Raises:
      VocabSizeError: the sizes differ (the message names the tokenizer file, both sizes and both fixes).
    """
    if tokenizer.vocab_size != int(model_vocab_size):
        raise VocabSizeError(
            f"tokenizer {tokenizer.model_path} has {tokenizer.vocab_size} pieces but the model has "
            f"{model_vocab_size} outputs ({model_source}); they must be equal: set "
            f"--config.model.vocab_size={tokenizer.vocab_size} or retrain the tokenizer with "
            f"--vocab_size={model_vocab_size}")


def train_from_manifest(manifest: str, out_prefix: str, vocab_size: int, model_type: str = "unigram",
                        hard_vocab_limit: bool = True) -> Tokenizer:
    """Trains on the ``text`` column of ``manifest``; ValueError naming the file when it has no rows."""
    from omni_tf.data.librispeech import read_manifest  # noqa: PLC0415 (text does not need data otherwise)

    texts = [row["text"] for row in read_manifest(manifest)]
    if not texts:
        raise ValueError(f"{manifest}: no rows to train a tokenizer on")
    return Tokenizer.train(texts, out_prefix, vocab_size, model_type=model_type,
                           hard_vocab_limit=hard_vocab_limit)
