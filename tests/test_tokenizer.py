"""SentencePiece tokenizer: id layout (blank 0, unk 1), round trips, error paths, and the train_spm recipe."""
import os
import subprocess
import sys

import pytest
import sentencepiece as spm

from omni_tf.data import text_source
from omni_tf.text.tokenizer import BLANK_PIECE, Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def sentences():
    return text_source.load_sentences()


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def tok(request, sentences, tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("spm") / request.param)
    return Tokenizer.train(sentences, prefix, vocab_size=256, model_type=request.param)


def test_id_layout(tok):
    assert tok.vocab_size == 256 and tok.blank_id == 0 and tok.unk_id == 1
    assert tok.id_to_piece(0) == BLANK_PIECE and tok.id_to_piece(1) == "<unk>"
    with pytest.raises(IndexError):
        tok.id_to_piece(256)
    with open(tok.model_path[: -len(".model")] + ".vocab", encoding="utf-8") as f:
        pieces = [line.split("\t")[0] for line in f]
    assert len(pieces) == 256 and pieces[:2] == [BLANK_PIECE, "<unk>"]


def test_round_trip_every_transcript_and_no_blank(tok, sentences):
    """Every sentence a synthetic corpus can contain encodes without 0 and decodes back exactly."""
    encoded = tok.encode_batch(sentences)
    for text, ids in zip(sentences, encoded, strict=True):
        assert ids and 0 not in ids and 1 not in ids and max(ids) < tok.vocab_size, text
        assert tok.decode(ids) == text
    assert encoded[0] == tok.encode(sentences[0])


def test_case_and_whitespace_normalized(tok):
    assert tok.encode("don't  panic ") == tok.encode("DON'T PANIC")
    assert tok.decode(tok.encode("don't panic")) == "DON'T PANIC"


def test_decode_drops_blanks(tok):
    ids = tok.encode("HELLO THERE")
    assert tok.decode([0] + ids[:1] + [0, 0] + ids[1:] + [0]) == "HELLO THERE"


def test_unseen_character_is_unk_not_blank(tok):
    ids = tok.encode("CAFÉ")
    assert 1 in ids and 0 not in ids


def test_train_is_deterministic(sentences, tmp_path):
    a = Tokenizer.train(sentences[:500], str(tmp_path / "a"), 100)
    b = Tokenizer.train(sentences[:500], str(tmp_path / "b"), 100)
    assert [a.id_to_piece(i) for i in range(100)] == [b.id_to_piece(i) for i in range(100)]


def test_vocab_too_large_is_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"at most \d+"):
        Tokenizer.train(["A B C", "ABC D"], str(tmp_path / "small"), 100)
    soft = Tokenizer.train(["A B C", "ABC D"], str(tmp_path / "soft"), 100, hard_vocab_limit=False)
    assert 6 <= soft.vocab_size < 100
    assert soft.decode(soft.encode("ABC D")) == "ABC D"


def test_vocab_smaller_than_alphabet(tmp_path):
    with pytest.raises(ValueError, match="distinct characters"):
        Tokenizer.train(["THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG"], str(tmp_path / "x"), 10)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="model_type"):
        Tokenizer.train(["A B"], str(tmp_path / "x"), 10, model_type="wordpiece")
    with pytest.raises(ValueError, match="no non-empty texts"):
        Tokenizer.train(["", "  "], str(tmp_path / "x"), 10)
    with pytest.raises(FileNotFoundError, match="missing.model"):
        Tokenizer(str(tmp_path / "missing.model"))


def test_rejects_model_without_blank_at_zero(tmp_path, sentences):
    prefix = str(tmp_path / "plain")
    # SentencePiece's default layout: unk=0, bos=1, eos=2.
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences[:300]), model_prefix=prefix,
                                   vocab_size=60, minloglevel=2)
    with pytest.raises(ValueError, match="id 0 must be the blank"):
        Tokenizer(prefix + ".model")


def _write_manifest(path, texts):
    from omni_tf.data.librispeech import write_manifest

    rows = [{"id": f"1-1-{i:04d}", "path": f"/x/1-1-{i:04d}.flac", "num_samples": 16000, "sample_rate": 16000,
             "duration_s": 1.0, "speaker": "1", "text": t} for i, t in enumerate(texts)]
    write_manifest(rows, str(path))


def test_train_spm_recipe(tmp_path, sentences):
    from omni_tf.text import tokenizer as tokenizer_lib

    manifest = tmp_path / "train.tsv"
    _write_manifest(manifest, sentences[:800])
    tok = tokenizer_lib.train_from_manifest(str(manifest), str(tmp_path / "spm"), 128, "bpe")
    assert os.path.isfile(tmp_path / "spm.model") and os.path.isfile(tmp_path / "spm.vocab")
    assert tok.vocab_size == 128
    assert all(tok.decode(tok.encode(t)) == t for t in sentences[:800])
    empty = tmp_path / "empty.tsv"
    _write_manifest(empty, [])
    with pytest.raises(ValueError, match="empty.tsv"):
        tokenizer_lib.train_from_manifest(str(empty), str(tmp_path / "e"), 64)


def test_train_spm_command_line(tmp_path, sentences):
    manifest = tmp_path / "train.tsv"
    _write_manifest(manifest, sentences[:300])
    cmd = [sys.executable, "-m", "recipes.librispeech.train_spm", f"--manifest={manifest}", "--vocab_size=64",
           "--model_type=unigram", f"--out_prefix={tmp_path / 'spm'}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "64 pieces" in out.stdout
    assert Tokenizer(str(tmp_path / "spm.model")).vocab_size == 64


def test_model_vocab_check_names_both_sizes(sentences, tmp_path):
    """A 30-piece tokenizer with a 16-output model fails at start-up (train/evaluate via ManifestSource),
    naming the file and both sizes, instead of in the predictor's embedding gather."""
    from omni_tf.configs import experiment
    from omni_tf.data import features, librispeech
    from omni_tf.text.tokenizer import VocabSizeError, check_model_vocab
    from omni_tf.training import sources

    tok = Tokenizer.train(sentences, str(tmp_path / "spm"), vocab_size=30)
    assert tok.vocab_size == 30
    check_model_vocab(tok, 30, "x")  # equal: fine
    for model_size in (16, 40):
        with pytest.raises(VocabSizeError, match=rf"spm.model has 30 pieces but the model has {model_size} "
                                                 r"outputs \(config.model.vocab_size\)"):
            check_model_vocab(tok, model_size, "config.model.vocab_size")
    librispeech.write_manifest([], str(tmp_path / "train.tsv"))
    features.save_cmvn(str(tmp_path / "cmvn.json"), [0.0] * 80, [1.0] * 80)
    config = experiment.get_config("tiny,smoke")
    config.paths.manifest_dir = str(tmp_path)
    config.model.vocab_size = 16
    with pytest.raises(VocabSizeError, match="30 pieces .* 16 outputs"):
        sources.ManifestSource(config)
    config.model.vocab_size = 30
    assert sources.ManifestSource(config).tokenizer.vocab_size == 30
