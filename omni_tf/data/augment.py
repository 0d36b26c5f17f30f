"""Training-time augmentation: pure, seeded functions on tensors (plus a numpy noise-corpus reader).

Seeds are stateless ``[2]`` int tensors (``tf.random.stateless_*``), so the same (seed, input) gives the same
output in eager mode, inside ``tf.data`` and after a resume. Wave level: ``speed_perturb`` (band-limited FFT
resampling: playing ``factor`` x faster changes tempo and pitch, length ``round(N / factor)``),
``add_noise`` (coloured noise from ``coloured_noise`` or segments of a user corpus such as MUSAN via
``NoiseCorpus``, at an SNR drawn from a range), ``reverberate`` with ``synthetic_rir`` (exponentially decaying
Gaussian tail). Feature level: ``spec_augment`` (frequency masks; time masks whose width is relative to the
utterance length).
"""
from __future__ import annotations

import math
import os

import numpy as np
import soundfile as sf
import tensorflow as tf

_LN_1000 = math.log(1000.0)  # 60 dB of amplitude decay


def _fold(seed, k: int) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), k)


def _uniform(seed, lo, hi) -> tf.Tensor:
    return tf.random.stateless_uniform([], seed, minval=lo, maxval=hi, dtype=tf.float32)


def speed_perturb(audio: tf.Tensor, factor) -> tf.Tensor:
    """Resamples [N] audio so it plays ``factor`` times faster: [round(N / factor)] float32."""
    audio = tf.convert_to_tensor(audio, tf.float32)
    factor = tf.cast(factor, tf.float32)
    n = tf.shape(audio)[0]
    m = tf.cast(tf.round(tf.cast(n, tf.float32) / factor), tf.int32)

    def resample():
        spec = tf.signal.rfft(audio)
        k = m // 2 + 1
        spec = spec[:k]
        spec = tf.pad(spec, [[0, k - tf.shape(spec)[0]]])
        return tf.signal.irfft(spec, fft_length=[m]) * (tf.cast(m, tf.float32) / tf.cast(n, tf.float32))

    return tf.cond(tf.logical_or(tf.equal(m, n), tf.equal(n, 0)), lambda: audio, resample)


def coloured_noise(num_samples, exponent, seed) -> tf.Tensor:
    """[num_samples] noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    white = tf.random.stateless_normal([num_samples], seed)
    spec = tf.signal.rfft(white)
    k = tf.maximum(tf.range(tf.shape(spec)[0], dtype=tf.float32), 1.0)
    shaped = tf.signal.irfft(spec * tf.cast(k ** (-tf.cast(exponent, tf.float32) / 2), tf.complex64),
                             fft_length=[num_samples])
    return shaped / tf.sqrt(tf.reduce_mean(shaped ** 2) + 1e-12)


def add_noise(audio: tf.Tensor, noise: tf.Tensor, snr_db) -> tf.Tensor:
    """audio [N] + noise [N] scaled to ``snr_db`` (signal power / noise power, in dB)."""
    p_signal = tf.reduce_mean(audio ** 2)
    p_noise = tf.reduce_mean(noise ** 2)
    scale = tf.sqrt(p_signal / (tf.maximum(p_noise, 1e-12) * 10.0 ** (tf.cast(snr_db, tf.float32) / 10.0)))
    return audio + scale * noise


def synthetic_rir(seed, rt60_s, drr_db, sample_rate: int = 16000) -> tf.Tensor:
    """[round(rt60_s * sample_rate)] impulse response: unit direct path + Gaussian tail decaying 60 dB in
    ``rt60_s``, tail energy ``drr_db`` below the direct path."""
    rt60_s = tf.cast(rt60_s, tf.float32)
    length = tf.maximum(2, tf.cast(tf.round(rt60_s * sample_rate), tf.int32))
    t = tf.range(length, dtype=tf.float32) / sample_rate
    tail = tf.random.stateless_normal([length], seed) * tf.exp(-_LN_1000 * t / rt60_s)
    tail = tf.concat([[0.0], tail[1:]], 0)
    tail *= tf.sqrt(10.0 ** (-tf.cast(drr_db, tf.float32) / 10.0) / tf.reduce_sum(tail ** 2))
    return tf.concat([[1.0], tail[1:]], 0)


def reverberate(audio: tf.Tensor, rir: tf.Tensor, keep_level: bool = True) -> tf.Tensor:
    """audio [N] convolved with rir [L] (FFT), truncated to [N]; RMS restored to the input's if keep_level."""
    n = tf.shape(audio)[0]
    size = n + tf.shape(rir)[0] - 1
    wet = tf.signal.irfft(tf.signal.rfft(audio, [size]) * tf.signal.rfft(rir, [size]), [size])[:n]
    if keep_level:
        wet *= tf.sqrt(tf.reduce_mean(audio ** 2) / tf.maximum(tf.reduce_mean(wet ** 2), 1e-12))
    return wet


def _band_mask(size, count: int, max_width, start_limit, seed) -> tf.Tensor:
    """[size] bool: union of ``count`` bands of width U[0, max_width] starting in [0, start_limit - width]."""
    if count == 0:
        return tf.zeros([size], tf.bool)
    max_width = tf.cast(max_width, tf.int32)
    widths = tf.random.stateless_uniform([count], _fold(seed, 0), 0, max_width + 1, dtype=tf.int32)
    u = tf.random.stateless_uniform([count], _fold(seed, 1))
    starts = tf.cast(tf.floor(u * tf.cast(start_limit - widths + 1, tf.float32)), tf.int32)
    pos = tf.range(size)[None, :]
    return tf.reduce_any((pos >= starts[:, None]) & (pos < (starts + widths)[:, None]), axis=0)


def spec_augment(features: tf.Tensor, seed, freq_masks: int = 2, freq_mask_width: int = 27,
                 time_masks: int = 4, time_mask_max_ratio: float = 0.05, length=None,
                 mask_value: float = 0.0) -> tf.Tensor:
    """SpecAugment on features [T, D]: frequency bands of width <= ``freq_mask_width`` and time spans of
    width <= ``time_mask_max_ratio * length`` (within the first ``length`` frames, default T) set to
    ``mask_value`` (0 = the mean after CMVN)."""
    features = tf.convert_to_tensor(features, tf.float32)
    t, d = tf.shape(features)[0], tf.shape(features)[1]
    length = t if length is None else tf.cast(length, tf.int32)
    fmask = _band_mask(d, freq_masks, tf.minimum(freq_mask_width, d), d, _fold(seed, 10))
    max_t = tf.cast(tf.floor(time_mask_max_ratio * tf.cast(length, tf.float32)), tf.int32)
    tmask = _band_mask(t, time_masks, max_t, length, _fold(seed, 11))
    return tf.where(tmask[:, None] | fmask[None, :], tf.cast(mask_value, tf.float32), features)


def augment_audio(audio: tf.Tensor, seed, data_config, noise: tf.Tensor | None = None) -> tf.Tensor:
    """Reverb then noise on [N] audio, each with probability ``reverb_prob`` / ``noise_prob`` when switched on
    in ``data_config``; ``noise`` [N] is a corpus segment, else coloured noise is generated. Speed
    perturbation is separate (the pipeline plans it, since it changes lengths)."""
    c = data_config
    audio = tf.convert_to_tensor(audio, tf.float32)
    if c.reverb:
        s = _fold(seed, 20)
        rt60 = _uniform(_fold(s, 0), *c.reverb_rt60_s)
        drr = _uniform(_fold(s, 1), *c.reverb_drr_db)
        audio = tf.cond(_uniform(_fold(s, 2), 0.0, 1.0) < c.reverb_prob,
                        lambda: reverberate(audio, synthetic_rir(_fold(s, 3), rt60, drr, c.sample_rate)),
                        lambda: audio)
    if c.noise:
        s = _fold(seed, 30)
        snr = _uniform(_fold(s, 0), *c.noise_snr_db)
        if noise is None:
            exponent = _uniform(_fold(s, 1), *c.noise_exponent)
            noise = coloured_noise(tf.shape(audio)[0], exponent, _fold(s, 2))
        audio = tf.cond(_uniform(_fold(s, 3), 0.0, 1.0) < c.noise_prob,
                        lambda: add_noise(audio, noise, snr), lambda: audio)
    return audio


class NoiseCorpus:
    """Noise files (``.wav``/``.flac``, recursive) under ``noise_dir``, all mono at ``sample_rate``."""

    def __init__(self, noise_dir: str, sample_rate: int = 16000):
        self.files, self.frames, bad = [], [], []
        for root, _, names in sorted(os.walk(noise_dir)):
            for name in sorted(names):
                if not name.lower().endswith((".wav", ".flac")):
                    continue
                path = os.path.join(root, name)
                try:
                    info = sf.info(path)
                except (sf.LibsndfileError, RuntimeError) as e:
                    bad.append(f"{path}: {e}")
                    continue
                if info.samplerate != sample_rate or info.channels != 1 or info.frames == 0:
                    bad.append(f"{path}: {info.samplerate} Hz, {info.channels} ch, {info.frames} frames")
                else:
                    self.files.append(path)
                    self.frames.append(info.frames)
        if bad:
            raise ValueError(f"unusable noise files (need mono {sample_rate} Hz): " + "; ".join(bad))
        if not self.files:
            raise ValueError(f"no .wav/.flac noise files under {noise_dir!r}")

    def segment(self, num_samples: int, seed: int) -> np.ndarray:
        """[num_samples] float32: a random excerpt of a random file (tiled when the file is shorter)."""
        rng = np.random.default_rng(seed)
        i = int(rng.integers(len(self.files)))
        if self.frames[i] >= num_samples:
            start = int(rng.integers(self.frames[i] - num_samples + 1))
            x, _ = sf.read(self.files[i], start=start, frames=num_samples, dtype="float32")
        else:
            x, _ = sf.read(self.files[i], dtype="float32")
            x = np.tile(x, -(-num_samples // len(x)))[:num_samples]
        return x.astype(np.float32)
