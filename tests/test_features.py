"""Tests for omni_tf.data.features: log-mel vs an independent numpy reference, CMVN vs numpy."""
import json
import os

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from omni_tf.configs import data as data_config_lib
from omni_tf.data import features


def _np_log_mel(x, rate=16000, n_mels=80, lo=20.0, hi=7600.0, floor=1e-6):
    """Independent reference: framing, periodic Hann, rfft power, HTK-mel triangles in the mel domain."""
    frame, hop, nfft = 400, 160, 512
    t = 1 + (len(x) - frame) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame)  # periodic Hann
    frames = np.stack([x[i * hop: i * hop + frame] for i in range(t)]).astype(np.float64) * window
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2

    def mel(f):
        return 1127.0 * np.log1p(f / 700.0)

    bins = mel(np.linspace(0, rate / 2, nfft // 2 + 1))[1:]  # the DC bin gets no weight
    edges = np.linspace(mel(lo), mel(hi), n_mels + 2)
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    up = (bins[:, None] - left) / (center - left)
    down = (right - bins[:, None]) / (right - center)
    w = np.vstack([np.zeros((1, n_mels)), np.maximum(0, np.minimum(up, down))])
    return np.log(np.maximum(power @ w, floor))


@pytest.fixture(scope="module")
def cfg():
    return data_config_lib.get_config()


def test_log_mel_matches_numpy_reference(cfg):
    rng = np.random.default_rng(0)
    n = 16000 + 123
    tt = np.arange(n) / 16000
    x = (0.3 * np.sin(2 * np.pi * 440 * tt) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    got = features.log_mel(x, cfg).numpy()
    want = _np_log_mel(x)
    assert got.shape == (1 + (n - 400) // 160, 80) == want.shape
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=1e-4)
    assert np.argmax(got[10]) == np.argmax(want[10])  # tone lands in the same band


@pytest.mark.parametrize("n,t", [(399, 0), (400, 1), (559, 1), (560, 2), (16000, 98)])
def test_frame_count_contract(cfg, n, t):
    assert features.log_mel(np.zeros([n], np.float32), cfg).shape == (t, 80)
    assert int(features.num_frames(n, cfg)) == t
    assert int(features.num_frames(tf.constant(n), cfg)) == t


def test_log_mel_batched_and_silence_floor(cfg):
    x = np.random.default_rng(1).uniform(-1, 1, [2, 3, 4000]).astype(np.float32)
    x[1, 2] = 0
    y = features.log_mel(x, cfg).numpy()
    assert y.shape == (2, 3, 23, 80)
    np.testing.assert_allclose(y[0, 1], features.log_mel(x[0, 1], cfg).numpy(), atol=1e-5)
    np.testing.assert_allclose(y[1, 2], np.log(1e-6), rtol=1e-6)


def test_cmvn_matches_numpy_on_concatenation():
    rng = np.random.default_rng(2)
    feats = [rng.normal(3.0, 2.0, [t, 80]).astype(np.float32) for t in (5, 17, 1, 40)]
    mean, std = features.compute_cmvn(feats)
    cat = np.concatenate(feats).astype(np.float64)
    np.testing.assert_allclose(mean, cat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, cat.std(0), rtol=1e-9)
    normed = features.apply_cmvn(cat.astype(np.float32), mean, std).numpy()
    np.testing.assert_allclose(normed.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(normed.std(0), 1, atol=1e-4)


def test_cmvn_errors_and_floor(tmp_path):
    with pytest.raises(ValueError, match="zero frames"):
        features.compute_cmvn([], dim=80)
    mean, std = features.compute_cmvn([np.ones([4, 80])])
    assert np.all(std == 1e-5)
    (tmp_path / "bad.json").write_text('{"mean": [0, 1]}')
    with pytest.raises(ValueError, match="bad.json"):
        features.load_cmvn(str(tmp_path / "bad.json"))


def test_cmvn_json_round_trip(tmp_path):
    mean, std = np.linspace(-1, 1, 80), np.linspace(0.5, 2, 80)
    features.save_cmvn(str(tmp_path / "cmvn.json"), mean, std, num_frames=12)
    m2, s2 = features.load_cmvn(str(tmp_path / "cmvn.json"))
    assert m2.dtype == np.float32 and m2.shape == (80,)
    np.testing.assert_allclose(m2, mean, rtol=1e-6)
    np.testing.assert_allclose(s2, std, rtol=1e-6)


def test_cmvn_from_manifest_equals_direct(cfg, tmp_path):
    rng = np.random.default_rng(3)
    rows, feats = [], []
    for i, n in enumerate((4000, 6100, 8000)):
        x = rng.uniform(-0.5, 0.5, n).astype(np.float32)
        p = str(tmp_path / f"{i}.flac")
        sf.write(p, x, 16000, subtype="PCM_24")
        rows.append({"path": p})
        feats.append(features.log_mel(sf.read(p, dtype="float32")[0], cfg).numpy())
    mean, std, count = features.compute_cmvn_from_manifest(rows, cfg)
    m2, s2 = features.compute_cmvn(feats)
    assert count == sum(len(f) for f in feats)
    np.testing.assert_allclose(mean, m2, rtol=2e-5)  # graph vs eager float32 matmul order
    np.testing.assert_allclose(std, s2, rtol=2e-5)
    _, _, count1 = features.compute_cmvn_from_manifest(rows, cfg, max_utterances=1)
    assert count1 == len(feats[0])


def test_cmvn_save_and_load_reject_non_finite_naming_the_file(tmp_path):
    path = str(tmp_path / "cmvn.json")
    mean = np.zeros(80)
    mean[3] = np.nan
    with pytest.raises(ValueError, match=f"{path}: CMVN .* finite"):
        features.save_cmvn(path, mean, np.ones(80))
    assert not os.path.exists(path)
    with open(path, "w") as f:  # what today's prepare wrote for a NaN sample
        json.dump({"mean": [float("nan")] * 80, "std": [float("nan")] * 80}, f)
    with pytest.raises(ValueError, match=f"{path}: CMVN"):
        features.load_cmvn(path)


@pytest.mark.parametrize("sizes", [[1000, 7, 0, 399, 401, 3000, 160], [16000], [100, 100], []])
def test_log_mel_stream_equals_log_mel(cfg, sizes):
    x = np.random.default_rng(len(sizes)).uniform(-0.5, 0.5, sum(sizes)).astype(np.float32)
    blocks = np.split(x, np.cumsum(sizes)[:-1]) if sizes else []
    chunks = list(features.log_mel_stream(blocks, cfg))
    whole = features.log_mel(x, cfg).numpy()
    got = np.concatenate(chunks) if chunks else np.zeros([0, 80], np.float32)
    assert got.shape == whole.shape
    np.testing.assert_allclose(got, whole, rtol=0, atol=2e-5)
