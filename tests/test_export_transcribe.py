"""recipes.librispeech.transcribe: LiteRT tier over audio files / a LibriSpeech-layout tree."""

import json
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
from tflite_export import bundle, inference_model
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
    bundle.export_tier(inference_model.bake(build_model(c), c), "t", str(root / "out"),
                       bundle.ParitySet(feats, [TEXTS[0]], tok, data_config=data_config, cmvn=(mean, std)),
                       bundle.ExportOptions("float32", sparse="never", latency_runs=2))
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
    assert transcribe.transcribe_files(tx, [good, str(bad)]) == (1, {"corrupt": 1})
    captured = capsys.readouterr()
    assert captured.out == f"{good}\t{tx(good)}\n"
    assert "bad.flac" in captured.err


def _main(*args):
    """recipes.librispeech.transcribe.main with these flags (reset afterwards); returns the exit status."""
    from absl import flags

    flags.FLAGS(["transcribe", *args])
    try:
        return transcribe.main([])
    finally:
        flags.FLAGS.unparse_flags()


def test_empty_and_short_audio_are_named_counted_skips(tier_and_tree, tmp_path, capsys):
    """0 samples and 100 samples: a skip naming the kind (the same kinds and limit prepare uses), counted;
    exit 1 when nothing was transcribed, 0 when something was (was: empty transcripts, exit 0)."""
    tier_dir, tree, _ = tier_and_tree
    empty, short = str(tmp_path / "empty.wav"), str(tmp_path / "short.wav")
    sf.write(empty, np.zeros(0, np.float32), 16000)
    sf.write(short, np.zeros(100, np.float32), 16000)
    tx = transcribe.TierTranscriber(tier_dir)
    assert tx.min_samples == 3600  # 160 ms chunk + 40 ms lookahead + 25 ms window, as in prepare
    assert transcribe.transcribe_files(tx, [empty, short]) == (0, {"empty_file": 1, "too_short": 1})
    err = capsys.readouterr().err
    assert f"skip {empty}: empty_file: 0 samples\n" in err
    assert f"skip {short}: too_short: 100 samples (6 ms) < minimum 3600 samples (225 ms)\n" in err
    assert _main(f"--tier_dir={tier_dir}", f"--audio={empty},{short}") == 1
    assert "transcribed 0, skipped 2 (empty_file 1, too_short 1)" in capsys.readouterr().err
    good = os.path.join(tree, "dev", "7", "1", "7-1-0001.flac")
    assert _main(f"--tier_dir={tier_dir}", f"--audio={empty},{good}") == 0
    assert "transcribed 1, skipped 1 (empty_file 1)" in capsys.readouterr().err


def test_other_rates_and_stereo_are_converted_and_said(tier_and_tree, tmp_path, capsys):
    """espeak-ng's 22.05 kHz WAV, a 44.1 kHz stereo file: resampled (soxr) + down-mixed, a "convert" line on
    stderr, features = log-mel of the soxr-resampled channel mean (was: "skip ... expected 16000 Hz")."""
    import shutil
    import subprocess

    import soxr

    from omni_tf.data import features as features_lib

    tier_dir, _, _ = tier_and_tree
    tx = transcribe.TierTranscriber(tier_dir)
    rng = np.random.default_rng(1)
    wave = (0.1 * rng.normal(size=(44100, 2))).astype(np.float32)
    stereo = str(tmp_path / "stereo44k.wav")
    sf.write(stereo, wave, 44100, subtype="FLOAT")
    paths = [stereo]
    if shutil.which("espeak-ng"):
        speech = str(tmp_path / "espeak.wav")
        subprocess.run(["espeak-ng", "-w", speech, "hello world"], check=True)
        assert sf.info(speech).samplerate == 22050
        paths.append(speech)
    assert transcribe.transcribe_files(tx, paths) == (len(paths), {})
    err = capsys.readouterr().err
    assert f"convert {stereo}: 2 channels -> mono, 44100 Hz -> 16000 Hz (soxr" in err and "skip" not in err
    if len(paths) == 2:
        assert f"convert {paths[1]}: 22050 Hz -> 16000 Hz (soxr" in err
    mono16 = soxr.resample(wave.mean(axis=1), 44100, 16000, quality="HQ")
    assert len(mono16) == 16000
    expected = features_lib.apply_cmvn(features_lib.log_mel(mono16, tx.data_config), tx.mean, tx.std)
    np.testing.assert_allclose(audio_features(stereo, tx.data_config, tx.mean, tx.std), expected, atol=1e-4)


def test_tokenizer_bigger_than_the_tier_is_refused_at_start_up(tier_and_tree, tmp_path):
    import shutil

    from omni_tf.text.tokenizer import VocabSizeError

    tier_dir, _, _ = tier_and_tree
    copy = tmp_path / "tier"
    shutil.copytree(tier_dir, copy)
    big = Tokenizer.train(TEXTS + ["FIG HIJ KLM"], str(tmp_path / "big"), vocab_size=20, model_type="char")
    shutil.copyfile(big.model_path, copy / "spm.model")
    from omni_tf import fileio  # a tier exported with that tokenizer: its completion record agrees

    record = json.loads((copy / fileio.RECORD).read_text())
    fileio.write_record(str(copy), record["kind"], record["spec"], record["files"])
    outputs = json.loads((copy / "manifest.json").read_text())["vocab_size"]
    assert outputs == Tokenizer(os.path.join(tier_dir, "spm.model")).vocab_size < big.vocab_size
    message = rf"has {big.vocab_size} pieces but the model has {outputs} outputs \(.*manifest.json vocab_size"
    with pytest.raises(VocabSizeError, match=message):
        transcribe.TierTranscriber(str(copy))


# -- bounded-memory streaming: a fake three-signature model (numpy, stateful) stands in for LiteRT ----------
FAKE_LAYOUT = {
    "chunk_frames": 16, "lookahead_frames": 4, "chunk_enc": 4, "num_mel_bins": 80,
    "encoder_state": [{"input": "cache", "output": "new_cache", "shape": [1, 8], "dtype": "float32"}],
    "predictor_state": [{"input": "h", "output": "new_h", "shape": [1, 8], "dtype": "float32"}]}


def fake_recognizer(record=None):
    from tflite_export.recognizer import StreamingGreedy

    def encode(features_chunk, cache):
        w = features_chunk[0]
        frames = w[:16].reshape(4, 4, 80).mean(1)[:, :8] + 0.1 * w[16:].mean() + cache
        return {"encoder_frames": frames[None], "new_cache": 0.5 * cache + frames.mean(0, keepdims=True)}

    def predict(token, h):
        new_h = 0.9 * h + 0.01 * float(token[0, 0])
        return {"pred_out": new_h, "new_h": new_h}

    def join(encoder_frame, pred_out):
        v = (encoder_frame + pred_out)[0, :5].copy()
        v[0] = 0.5
        return {"log_probs": v[None]}

    return StreamingGreedy(encode, predict, join, FAKE_LAYOUT, record=record)


@pytest.mark.parametrize("num_frames", [0, 3, 16, 20, 37, 64, 100])
def test_streamed_windows_equal_whole_utterance_windows(num_frames):
    from tflite_export.recognizer import chunk_windows

    feats = np.random.default_rng(num_frames).normal(size=[num_frames, 80]).astype(np.float32)
    whole_calls, stream_calls = [], []
    want_tokens = fake_recognizer(lambda n, f: whole_calls.append((n, f))).decode_frames(
        fake_recognizer().encoder_frames(feats))
    # Reference: the whole-utterance rule (chunk_windows) fed one window at a time.
    rec = fake_recognizer()
    wins, valid = chunk_windows(feats, 16, 4)
    cache, want = rec._init("encoder_state"), []
    for win in wins:
        out = rec.encode(features_chunk=win[None], **cache)
        want.append(out["encoder_frames"][0])
        cache = {"cache": out["new_cache"]}
    want = np.concatenate(want)[:valid]
    rng = np.random.default_rng(1)
    cuts = np.sort(rng.integers(0, num_frames + 1, 4))
    chunks = np.split(feats, cuts)  # uneven chunks, some empty
    got = np.concatenate(list(fake_recognizer().stream_encoder_frames(chunks)))
    np.testing.assert_array_equal(got, want)
    rec = fake_recognizer(lambda n, f: stream_calls.append((n, f)))
    assert rec.decode_stream(rec.stream_encoder_frames(chunks)) == want_tokens
    assert len(stream_calls) == len(whole_calls) + len(wins)


def _write_noise(path, seconds: float, rate: int = 16000, channels: int = 1) -> None:
    rng = np.random.default_rng(0)
    total = int(seconds * rate)
    with sf.SoundFile(str(path), "w", rate, channels, "PCM_16") as f:
        for start in range(0, total, rate * 10):
            f.write((0.1 * rng.normal(size=(min(rate * 10, total - start), channels))).astype(np.float32))


@pytest.mark.parametrize("rate,channels", [(16000, 1), (44100, 2), (22050, 1)])
def test_transcribe_file_equals_whole_file_path(tier_and_tree, tmp_path, rate, channels):
    from tflite_export.recognizer import stream_audio_features

    tier_dir, _, _ = tier_and_tree
    tx = transcribe.TierTranscriber(tier_dir)
    path = tmp_path / "long.wav"
    _write_noise(path, 7.3, rate, channels)
    whole = audio_features(str(path), tx.data_config, tx.mean, tx.std)
    chunks = list(stream_audio_features(str(path), tx.data_config, tx.mean, tx.std, block_samples=5000))
    assert len(chunks) > 20
    # Blocks of 16 kHz mono audio give the same samples; soxr's streaming and one-shot outputs differ by
    # float rounding only.
    np.testing.assert_allclose(np.concatenate(chunks), whole, rtol=0, atol=2e-5 if rate == 16000 else 1e-3)
    assert tx(str(path)) == tx.tokenizer.decode(tx.recognizer.transcribe_features(whole))


MEMORY_SCRIPT = """
import resource, sys, types
import omni_tf
from omni_tf.configs import data as data_configs
from recipes.librispeech import transcribe
from tests.test_export_transcribe import fake_recognizer

tx = transcribe.TierTranscriber.__new__(transcribe.TierTranscriber)
tx.data_config, tx.mean, tx.std, tx.min_samples = data_configs.get_config(), None, None, 0
tx.tokenizer = types.SimpleNamespace(decode=lambda ids: str(len(ids)))
tx.recognizer = fake_recognizer()
for path in sys.argv[1:]:
    tx(path)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)  # peak KiB so far
"""


def test_transcribe_peak_memory_does_not_grow_with_length(tmp_path):
    """Peak RSS after a 10-minute file exceeds the 1-minute file's by < 40 MB (the whole-file path grew
    ~43 MB per minute of audio)."""
    import subprocess
    import sys

    paths = [tmp_path / "warmup.wav", tmp_path / "1min.wav", tmp_path / "10min.wav"]
    for p, seconds in zip(paths, (5, 60, 600), strict=True):
        _write_noise(p, seconds)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, *map(str, paths)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, one_min, ten_min = (int(x) for x in proc.stdout.split())
    print("peak KiB", one_min, ten_min)
    assert ten_min - one_min < 40 * 1024, (one_min, ten_min)


def test_transcriber_refuses_a_tier_that_is_not_whole(tier_and_tree, tmp_path):
    import shutil

    from omni_tf.fileio import IncompleteOutput

    tier_dir, _, _ = tier_and_tree
    mixed = str(tmp_path / "t")
    shutil.copytree(tier_dir, mixed)
    with open(os.path.join(mixed, "model.tflite"), "r+b") as f:  # another model beside the old manifest
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(IncompleteOutput, match=r"model\.tflite: content differs"):
        transcribe.TierTranscriber(mixed)
    with open(os.path.join(mixed, "model.tflite"), "r+b") as f:  # a truncated model (killed mid-write)
        f.truncate(1000)
    with pytest.raises(IncompleteOutput, match=r"model\.tflite: 1000 bytes"):
        transcribe.TierTranscriber(mixed)
    os.remove(os.path.join(mixed, "COMPLETE.json"))  # no completion record (e.g. killed before it)
    with pytest.raises(IncompleteOutput, match=r"COMPLETE\.json: missing"):
        transcribe.TierTranscriber(mixed)
