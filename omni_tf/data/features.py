"""Log-mel features (tf.signal) and global CMVN (streaming float64 sums, JSON on disk).

Contract (docs/DESIGN.md): ``log_mel(audio [..., N]) -> [..., T, 80]`` with ``T = 1 + (N - 400) // 160`` at
16 kHz: 25 ms periodic-Hann window, 10 ms hop, 512-point FFT, power spectrum, HTK-mel filterbank
(``tf.signal.linear_to_mel_weight_matrix``, 20-7600 Hz), ``log(max(mel, log_floor))``; no padding at the ends.
``log_mel_stream`` computes the same features chunk by chunk from sample blocks (bounded memory).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import tensorflow as tf  # omni_tf/__init__ (imported first) set TF_USE_LEGACY_KERAS

from omni_tf import fileio
from omni_tf.data import audio as audio_lib


def frame_params(data_config) -> tuple[int, int]:
    """(frame_length, frame_step) in samples."""
    rate = data_config.sample_rate
    return (int(round(rate * data_config.frame_length_ms / 1000)),
            int(round(rate * data_config.frame_step_ms / 1000)))


def num_frames(num_samples, data_config):
    """Feature frames for ``num_samples`` samples (int, numpy or tensor): ``max(0, 1 + (N - L) // H)``."""
    length, step = frame_params(data_config)
    if isinstance(num_samples, (int, np.integer, np.ndarray)):
        return np.maximum(0, 1 + (np.asarray(num_samples) - length) // step)
    return tf.maximum(0, 1 + (num_samples - length) // step)


def mel_matrix(data_config) -> tf.Tensor:
    """[fft_length // 2 + 1, num_mel_bins] HTK-mel filterbank."""
    return tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=data_config.num_mel_bins, num_spectrogram_bins=data_config.fft_length // 2 + 1,
        sample_rate=data_config.sample_rate, lower_edge_hertz=data_config.lower_edge_hz,
        upper_edge_hertz=data_config.upper_edge_hz, dtype=tf.float32)


def log_mel(audio: tf.Tensor, data_config) -> tf.Tensor:
    """Log-mel features: audio [..., N] float32 in [-1, 1] -> [..., T, num_mel_bins] float32."""
    length, step = frame_params(data_config)
    frames = tf.signal.frame(tf.convert_to_tensor(audio, tf.float32), length, step, pad_end=False)
    frames *= tf.signal.hann_window(length, periodic=True)
    # Explicit zero-padding to the FFT size: tf.signal.stft/rfft(fft_length=...) fails on zero frames.
    pad = [[0, 0]] * (frames.shape.rank - 1) + [[0, data_config.fft_length - length]]
    stft = tf.signal.rfft(tf.pad(frames, pad))
    power = tf.math.real(stft) ** 2 + tf.math.imag(stft) ** 2
    mel = tf.tensordot(power, mel_matrix(data_config), axes=1)
    return tf.math.log(tf.maximum(mel, data_config.log_floor))


def log_mel_stream(blocks: Iterable[np.ndarray], data_config) -> Iterator[np.ndarray]:
    """Log-mel of a long signal given as consecutive sample blocks, chunk by chunk: yields float32
    [t_i, num_mel_bins] whose concatenation equals ``log_mel`` of the concatenated blocks (same frames,
    same per-frame arithmetic; tested to float32 rounding).

    Memory: one block plus the window overlap (``frame_length - frame_step`` samples carried to the next
    chunk), independent of the signal's length. Blocks may have any sizes (also 0); a chunk may be empty.
    """
    length, step = frame_params(data_config)
    carry = np.zeros([0], np.float32)
    for block in blocks:
        buf = np.concatenate([carry, np.asarray(block, np.float32).reshape(-1)])
        frames = int(num_frames(len(buf), data_config))
        if frames == 0:
            carry = buf
            continue
        yield log_mel(buf[: (frames - 1) * step + length], data_config).numpy()
        carry = buf[frames * step:]


def features_from_paths(paths: list[str], data_config, num_parallel_calls: int = tf.data.AUTOTUNE,
                        finite: bool = True) -> tf.data.Dataset:
    """Dataset of log-mel [T, 80] for each audio path, in order (decoded with soundfile; audio that is not
    at ``data_config.sample_rate`` mono is converted, ``omni_tf.data.audio.decode(convert=True)``; a NaN/Inf
    sample fails the dataset unless ``finite=False``)."""
    rate = data_config.sample_rate

    def decode(path):
        return audio_lib.decode(path.decode(), rate, convert=True, finite=finite)

    def load(path):
        wave = tf.numpy_function(decode, [path], tf.float32, stateful=False)
        return log_mel(tf.reshape(wave, [-1]), data_config)

    return tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string)).map(
        load, num_parallel_calls=num_parallel_calls, deterministic=True)


class CmvnAccumulator:
    """Streaming per-dimension sums in float64; ``update`` with [T, D] (or [..., T, D]) features."""

    def __init__(self, dim: int):
        self.count = 0
        self.sum = np.zeros(dim, np.float64)
        self.sum_sq = np.zeros(dim, np.float64)

    def update(self, features) -> None:
        x = np.asarray(features, np.float64).reshape(-1, self.sum.shape[0])
        self.count += x.shape[0]
        self.sum += x.sum(0)
        self.sum_sq += (x * x).sum(0)

    def result(self, min_std: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
        """(mean [D], std [D]) as float64; std floored at ``min_std``."""
        if self.count == 0:
            raise ValueError("CMVN over zero frames")
        mean = self.sum / self.count
        var = np.maximum(self.sum_sq / self.count - mean * mean, 0.0)
        return mean, np.maximum(np.sqrt(var), min_std)


def compute_cmvn(features: Iterable, dim: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Global (mean [D], std [D]) over all frames of an iterable of [T, D] feature arrays."""
    acc = CmvnAccumulator(dim)
    for f in features:
        acc.update(f)
    return acc.result()


def compute_cmvn_from_manifest(rows: list[dict], data_config, max_utterances: int = 0,
                               on_non_finite: Callable[[dict, str], None] | None = None
                               ) -> tuple[np.ndarray, np.ndarray, int]:
    """CMVN over manifest rows (first ``max_utterances`` if > 0): (mean, std, num_frames).

    An utterance whose features hold NaN/Inf (e.g. huge float samples overflowing the power spectrum) is left
    out of the statistics and passed to ``on_non_finite(row, reason)``; without a callback it raises
    ``ValueError`` naming the file.
    """
    rows = rows[:max_utterances] if max_utterances > 0 else rows
    acc = CmvnAccumulator(data_config.num_mel_bins)
    feats = features_from_paths([r["path"] for r in rows], data_config, finite=False).prefetch(4)
    for row, f in zip(rows, feats, strict=True):
        f = f.numpy()
        bad = ~np.isfinite(f)
        if bad.any():
            reason = (f"{int(bad.sum())} non-finite log-mel values in {int(bad.any(axis=1).sum())} of "
                      f"{len(f)} frames (first: frame {int(np.flatnonzero(bad.any(axis=1))[0])})")
            try:  # name the sample when the audio itself holds the NaN/Inf
                audio_lib.decode(row["path"], data_config.sample_rate, convert=True)
            except audio_lib.AudioError as e:
                reason = f"{e.reason}; {reason}" if e.kind == audio_lib.NON_FINITE else reason
            if on_non_finite is None:
                raise ValueError(f"{row['path']}: {reason}")
            on_non_finite(row, reason)
            continue
        acc.update(f)
    mean, std = acc.result()
    return mean, std, acc.count


def _check_stats(path: str, mean: np.ndarray, std: np.ndarray) -> None:
    if mean.shape != std.shape or mean.ndim != 1 or not np.all(np.isfinite(mean)) \
            or not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise ValueError(f"{path}: CMVN mean/std must be equal-length vectors of finite values with std > 0 "
                         f"(non-finite mean values: {int(np.sum(~np.isfinite(mean)))}, std: "
                         f"{int(np.sum(~np.isfinite(std)))})")


def save_cmvn(path: str, mean, std, **metadata) -> None:
    """Writes ``{"mean": [...], "std": [...], **metadata}`` as JSON; ValueError naming ``path`` (nothing
    written, the old file kept) if the statistics are not finite or std <= 0."""
    _check_stats(path, np.asarray(mean, np.float64), np.asarray(std, np.float64))
    fileio.write_json(path, dict(mean=[float(v) for v in mean], std=[float(v) for v in std], **metadata))


def load_cmvn(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], std [D]) float32 from a ``save_cmvn`` file; ValueError naming the file if malformed or not
    finite."""
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    try:
        mean, std = np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a CMVN file ({e})") from e
    _check_stats(path, mean, std)
    return mean, std


def apply_cmvn(features, mean, std) -> tf.Tensor:
    """(features [..., D] - mean [D]) / std [D]."""
    return (features - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
