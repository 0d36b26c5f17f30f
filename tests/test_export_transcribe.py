"""recipes.librispeech.transcribe: LiteRT tier over audio files / a LibriSpeech-layout tree."""

import os

import numpy as np
import pytest
import soundfile as sf

import omni_tf  # noqa: F401
from omni_tf.configs import data as data_configs
from omni_tf.configs import model as model_configs
from omni_tf.model import build_model
from omni_tf.text.tokenizer import Tokenizer
from recipes.librispeech import transcribe
from tflite_export import bundle
from tflite_export.recognizer import audio_features, frontend_config

TEXTS = ["ABC ABD", "BAD CAB", "DAB BAC", "CAD ACE", "BED DEB"]


@pytest.fixture(scope="module")
def tier_and_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tx")
    tok = Tokenizer.train(TEXTS, str(root / "spm"), vocab_size=12, model_type="char")
    c = model_configs.tiny()
    c.d_model, c.num_layers, c.num_heads, c.ff_dim, c.conv_kernel = 32, 1, 2, 64, 5
    c.vocab_size, c.pred_embed_dim, c.pred_hidden, c.joint_dim, c.dropout = tok.vocab_size, 16, 24, 24, 0.0
    rng = np.random.default_rng(0)
    chapter = root / "tree" / "dev" / "7" / "1"
    os.makedirs(chapter)
    lines = []
    for i in range(3):
        utt = f"7-1-{i:04d}"
        sf.write(str(chapter / f"{utt}.flac"), (0.1 * rng.normal(size=8000 + 1600 * i)).astype(np.float32),
                 16000)
        lines.append(f"{utt} {TEXTS[i]}")
    (chapter / "7-1.trans.txt").write_text("\n".join(lines) + "\n")
    data_config = data_configs.get_config()
    mean, std = np.zeros(80, np.float32) - 5.0, np.full(80, 3.0, np.float32)
    feats = [audio_features(str(chapter / "7-1-0000.flac"), data_config, mean, std)]
    bundle.export_tier(build_model(c), c, "t", None, str(root / "out"), "float32", feats,
                       data_config=data_config, cmvn=(mean, std), tokenizer=tok, references=[TEXTS[0]],
                       sparse="never", latency_runs=2)
    return str(root / "out" / "t"), str(root / "tree"), feats[0]


def test_transcriber_uses_manifest_frontend_and_cmvn(tier_and_tree):
    tier_dir, tree, feats = tier_and_tree
    tx = transcribe.TierTranscriber(tier_dir)
    assert frontend_config(tx.manifest["frontend"]).frame_step_ms == 10.0
    path = os.path.join(tree, "dev", "7", "1", "7-1-0000.flac")
    np.testing.assert_allclose(audio_features(path, tx.data_config, tx.mean, tx.std), feats, rtol=1e-6)
    tokens = tx.recognizer.transcribe_features(feats)
    assert tx(path) == tx.tokenizer.decode(tokens)


def test_transcribe_tree_writes_kaldi_lines_and_wer(tier_and_tree, tmp_path, capsys):
    tier_dir, tree, _ = tier_and_tree
    out = tmp_path / "hyp.txt"
    summary = transcribe.transcribe_tree(transcribe.TierTranscriber(tier_dir), tree, str(out))
    lines = out.read_text().splitlines()
    assert [ln.split(" ", 1)[0] for ln in lines] == ["7-1-0000", "7-1-0001", "7-1-0002"]
    assert summary["utterances"] == 3 and summary["skipped"] == 0 and summary["wer"] is not None
    assert "WER" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="trans.txt"):
        transcribe.librispeech_utterances(str(tmp_path))


def test_transcribe_files_prints_path_tab_text_and_counts_bad_files(tier_and_tree, tmp_path, capsys):
    tier_dir, tree, _ = tier_and_tree
    good = os.path.join(tree, "dev", "7", "1", "7-1-0001.flac")
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"not audio")
    tx = transcribe.TierTranscriber(tier_dir)
    assert transcribe.transcribe_files(tx, [good, str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == f"{good}\t{tx(good)}\n"
    assert "bad.flac" in captured.err
