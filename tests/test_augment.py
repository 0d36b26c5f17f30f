"""Tests for omni_tf.data.augment: each augmentation against a measurable property, seeded determinism."""
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from omni_tf.configs import data as data_config_lib
from omni_tf.data import augment

SEED = tf.constant([3, 7], tf.int64)


def _peak_hz(x, rate=16000):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * rate / len(x)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_scales_length_and_pitch(factor):
    n = 16000
    x = np.sin(2 * np.pi * 1000 * np.arange(n) / 16000).astype(np.float32)
    y = augment.speed_perturb(x, factor).numpy()
    assert len(y) == round(n / factor)
    # Same samples played at 16 kHz: the tone moves by the factor, amplitude is kept.
    assert _peak_hz(y) == pytest.approx(1000 * factor, abs=2.0)
    assert np.sqrt(np.mean(y ** 2)) == pytest.approx(np.sqrt(0.5), rel=0.02)


def test_speed_perturb_identity_at_one():
    x = np.random.default_rng(0).standard_normal(1001).astype(np.float32)
    np.testing.assert_array_equal(augment.speed_perturb(x, 1.0).numpy(), x)


@pytest.mark.parametrize("exponent,slope", [(0.0, 0.0), (1.0, -1.0), (2.0, -2.0)])
def test_coloured_noise_spectral_slope(exponent, slope):
    x = augment.coloured_noise(1 << 16, exponent, SEED).numpy()
    assert np.sqrt(np.mean(x ** 2)) == pytest.approx(1.0, rel=1e-3)
    power = np.abs(np.fft.rfft(x)) ** 2
    k = np.arange(len(power))
    band = (k > 50) & (k < len(power) // 2)
    fitted = np.polyfit(np.log(k[band]), np.log(power[band] + 1e-20), 1)[0]
    assert fitted == pytest.approx(slope, abs=0.15)


def test_add_noise_reaches_snr():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(8000).astype(np.float32) * 0.1
    noise = rng.uniform(-1, 1, 8000).astype(np.float32)
    y = augment.add_noise(x, noise, 12.0).numpy()
    snr = 10 * np.log10(np.mean(x ** 2) / np.mean((y - x) ** 2))
    assert snr == pytest.approx(12.0, abs=1e-3)


def test_reverberate_equals_numpy_convolution():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(3000).astype(np.float32)
    h = rng.standard_normal(500).astype(np.float32) * 0.1
    want = np.convolve(x, h)[:3000]
    np.testing.assert_allclose(augment.reverberate(x, h, keep_level=False).numpy(), want, atol=2e-4)
    kept = augment.reverberate(x, h).numpy()
    assert np.sqrt(np.mean(kept ** 2)) == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=1e-4)
    np.testing.assert_allclose(augment.reverberate(x, np.array([1.0], np.float32)).numpy(), x, atol=1e-5)


def test_synthetic_rir_decay_and_drr():
    h = augment.synthetic_rir(SEED, 0.5, 6.0).numpy()
    assert len(h) == 8000 and h[0] == 1.0
    assert 10 * np.log10(1.0 / np.sum(h[1:] ** 2)) == pytest.approx(6.0, abs=1e-3)
    early, late = np.mean(h[1:800] ** 2), np.mean(h[-800:] ** 2)
    assert 10 * np.log10(early / late) > 40  # ~54 dB expected between the first and last 50 ms


def test_spec_augment_masks_are_bounded_and_seeded():
    x = np.ones([200, 80], np.float32)
    y = augment.spec_augment(x, SEED, freq_masks=2, freq_mask_width=10, time_masks=3,
                             time_mask_max_ratio=0.05, length=150).numpy()
    masked_cols = np.all(y[150:] == 0, axis=0)  # beyond `length` only frequency masks apply
    masked_rows = np.all(y == 0, axis=1)
    assert 0 < masked_cols.sum() <= 20
    assert masked_rows.sum() <= 3 * 7 and not masked_rows[150:].any()
    assert np.all((y == 0) == (masked_cols[None, :] | masked_rows[:, None]))
    np.testing.assert_array_equal(y, augment.spec_augment(x, SEED, 2, 10, 3, 0.05, length=150).numpy())
    z = augment.spec_augment(x, tf.constant([4, 7], tf.int64), 2, 10, 3, 0.05, length=150).numpy()
    assert not np.array_equal(y, z)
    assert np.array_equal(augment.spec_augment(x, SEED, 0, 10, 0, 0.05).numpy(), x)


def test_augment_audio_switches_and_determinism():
    cfg = data_config_lib.get_config()
    x = np.random.default_rng(3).standard_normal(4000).astype(np.float32)
    np.testing.assert_array_equal(augment.augment_audio(x, SEED, cfg).numpy(), x)  # all off by default
    cfg.noise, cfg.reverb, cfg.noise_prob, cfg.reverb_prob = True, True, 1.0, 1.0
    a = augment.augment_audio(x, SEED, cfg).numpy()
    assert a.shape == x.shape and not np.allclose(a, x)
    np.testing.assert_array_equal(a, augment.augment_audio(x, SEED, cfg).numpy())
    graph = tf.function(lambda s: augment.augment_audio(x, s, cfg))(SEED).numpy()
    np.testing.assert_allclose(graph, a, atol=1e-5)


def test_noise_corpus_segments_and_errors(tmp_path):
    (tmp_path / "n").mkdir()
    sf.write(str(tmp_path / "n" / "a.wav"), np.full(1000, 0.25, np.float32), 16000)
    corpus = augment.NoiseCorpus(str(tmp_path / "n"))
    seg = corpus.segment(2500, seed=1)
    assert seg.shape == (2500,) and np.allclose(seg, 0.25, atol=1e-4)  # tiled
    assert corpus.segment(300, seed=2).shape == (300,)
    sf.write(str(tmp_path / "n" / "b.wav"), np.zeros(100, np.float32), 8000)
    with pytest.raises(ValueError, match="b.wav"):
        augment.NoiseCorpus(str(tmp_path / "n"))
    (tmp_path / "n" / "empty").mkdir()
    with pytest.raises(ValueError, match="no .wav"):
        augment.NoiseCorpus(str(tmp_path / "n" / "empty"))
