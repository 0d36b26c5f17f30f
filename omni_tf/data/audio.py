"""Audio decoding, checks and conversion to the model input (16 kHz mono) with soundfile + soxr; no TF.

Policy (also in README "Audio input" and docs/BENCHMARKS.md "Input pipeline"):
- Rate and channels: ``prepare`` rejects and reports files that are not 16 kHz mono (kind ``sample_rate`` /
  ``channels``) unless ``--convert_audio`` is given; then, as ``transcribe`` always does, the audio is
  down-mixed (mean of the channels) and resampled with soxr (``RESAMPLER``), and each converted file is
  reported. LibriSpeech is 16 kHz mono, so there a mismatch means a wrong or damaged corpus.
- Length: a file with 0 samples (kind ``empty_file``) or fewer samples than the model needs (kind
  ``too_short``, counted after conversion) is a named, counted skip in ``prepare`` and in ``transcribe``.

Corruption check (``probe``): ``check="full"`` decodes every frame and compares the count with the header;
``check="header"`` reads the header and then seeks to and decodes the last block, which catches garbage files
and truncated FLAC streams at a fraction of the cost, but not damage in the middle of a stream.

Non-finite samples (NaN / Inf, possible in float WAV files whatever their name) are rejected as kind
``non_finite`` wherever samples are decoded: ``probe`` (every block with ``check="full"``, the last block with
``"header"``), ``decode`` and ``read_blocks`` (block by block, for long recordings); one such sample would
turn the CMVN statistics and every loss it touches into NaN.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import numpy as np
import soundfile as sf
import soxr

# Problem kinds reported for audio files.
EMPTY_FILE = "empty_file"
CORRUPT = "corrupt"
SAMPLE_RATE = "sample_rate"
CHANNELS = "channels"
TOO_SHORT = "too_short"
NON_FINITE = "non_finite"

# The resampler of every conversion (part of the feature-cache key: another one gives other samples).
RESAMPLER_QUALITY = "HQ"
RESAMPLER = f"soxr {soxr.__version__} {RESAMPLER_QUALITY}"

_TAIL_FRAMES = 4096
_BLOCK_FRAMES = 1 << 16


class AudioError(Exception):
    """A bad audio file: ``kind`` is one of the constants above, ``reason`` is human readable."""

    def __init__(self, path: str, kind: str, reason: str):
        super().__init__(f"{path}: {kind}: {reason}")
        self.path, self.kind, self.reason = path, kind, reason


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    num_samples: int
    sample_rate: int
    channels: int

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate


def check_finite(path: str, samples: np.ndarray, offset: int = 0) -> None:
    """Raises AudioError (``non_finite``) naming the first NaN/Inf sample of ``samples`` ([N] or [N, C],
    starting at sample ``offset`` of the file)."""
    samples = np.asarray(samples)
    flat = samples.reshape(len(samples), samples.size // max(1, len(samples)))
    bad = ~np.isfinite(flat)
    if bad.any():
        first = int(np.flatnonzero(bad.any(axis=1))[0])
        last = offset + len(flat) - 1
        raise AudioError(path, NON_FINITE, f"sample {offset + first} is {flat[first][bad[first]][0]} "
                         f"({int(bad.sum())} non-finite values in samples {offset}..{last})")


def probe(path: str, check: str = "full") -> AudioInfo:
    """Reads the header of ``path`` and verifies the stream decodes (see module docstring for ``check``).

    Raises:
      AudioError: kind ``empty_file`` (0 bytes), ``corrupt`` (undecodable, or fewer frames than the header)
        or ``non_finite`` (a NaN/Inf sample among those decoded).
    """
    if check not in ("full", "header"):
        raise ValueError(f"check must be 'full' or 'header', got {check!r}")
    if os.path.getsize(path) == 0:
        raise AudioError(path, EMPTY_FILE, "file has 0 bytes")
    try:
        with sf.SoundFile(path) as f:
            info = AudioInfo(int(f.frames), int(f.samplerate), int(f.channels))
            if info.num_samples == 0:
                raise AudioError(path, EMPTY_FILE, "header declares 0 frames")
            if check == "full":
                decoded = 0
                while True:
                    block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                    if len(block) == 0:
                        break
                    check_finite(path, block, decoded)
                    decoded += len(block)
            else:
                f.seek(max(0, info.num_samples - _TAIL_FRAMES))
                start = f.tell()
                tail = f.read(_TAIL_FRAMES, dtype="float32", always_2d=True)
                check_finite(path, tail, start)
                decoded = start + len(tail)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(path, CORRUPT, f"libsndfile: {e}") from e
    if decoded != info.num_samples:
        raise AudioError(path, CORRUPT, f"decoded {decoded} frames, header declares {info.num_samples}")
    return info


def read_info(path: str) -> AudioInfo:
    """The header of ``path`` (no decoding). Raises AudioError ``corrupt`` if libsndfile cannot open it."""
    try:
        i = sf.info(path)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(path, CORRUPT, f"libsndfile: {e}") from e
    return AudioInfo(int(i.frames), int(i.samplerate), int(i.channels))


def check_length(path: str, num_samples: int, sample_rate: int, min_samples: int) -> None:
    """Raises AudioError ``empty_file`` (0 samples) or ``too_short`` (fewer than ``min_samples``)."""
    if num_samples == 0:
        raise AudioError(path, EMPTY_FILE, "0 samples")
    if num_samples < min_samples:
        raise AudioError(
            path, TOO_SHORT, f"{num_samples} samples ({num_samples / sample_rate * 1000:.0f} ms) < minimum "
            f"{min_samples} samples ({min_samples / sample_rate * 1000:.0f} ms)")


def check_info(path: str, info: AudioInfo, sample_rate: int, min_samples: int, convert: bool = False) -> None:
    """Raises AudioError (``sample_rate``, ``channels``, ``empty_file``, ``too_short``) for unusable ``info``.

    With ``convert`` any rate and channel count is accepted and the length is checked after resampling.
    """
    if not convert and info.sample_rate != sample_rate:
        raise AudioError(path, SAMPLE_RATE, f"{info.sample_rate} Hz, expected {sample_rate} Hz")
    if not convert and info.channels != 1:
        raise AudioError(path, CHANNELS, f"{info.channels} channels, expected mono")
    check_length(path, converted_length(info.num_samples, info.sample_rate, sample_rate), sample_rate,
                 min_samples)


def converted_length(num_samples: int, from_rate: int, to_rate: int) -> int:
    """Samples after resampling ``num_samples`` from ``from_rate`` to ``to_rate`` Hz: round(n * to / from)."""
    return (2 * int(num_samples) * int(to_rate) + int(from_rate)) // (2 * int(from_rate))


def conversion(info: AudioInfo, sample_rate: int) -> str | None:
    """What ``decode(..., convert=True)`` does to a file described by ``info``, in words (None: nothing)."""
    steps = []
    if info.channels != 1:
        steps.append(f"{info.channels} channels -> mono")
    if info.sample_rate != sample_rate:
        steps.append(f"{info.sample_rate} Hz -> {sample_rate} Hz ({RESAMPLER})")
    return ", ".join(steps) or None


def to_model_input(samples: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """Down-mixes [n, channels] float32 samples (channel mean) and resamples them from ``rate`` to
    ``sample_rate`` Hz with soxr (band-limited, linear phase); returns [converted_length(n)] float32."""
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if rate == sample_rate:
        return np.ascontiguousarray(mono, np.float32)
    out = soxr.resample(mono, rate, sample_rate, quality=RESAMPLER_QUALITY).astype(np.float32)
    n = converted_length(len(mono), rate, sample_rate)  # the manifest's count, whatever soxr rounds to
    return out[:n] if len(out) >= n else np.pad(out, (0, n - len(out)))


def decode(path: str, sample_rate: int | None = None, convert: bool = False, min_samples: int = 0,
           finite: bool = True) -> np.ndarray:
    """Decodes ``path`` to float32 samples in [-1, 1], shape [num_samples] (at ``sample_rate`` with convert).

    Args:
      sample_rate: the rate the caller needs (None: any; not with ``convert``).
      convert: down-mix and resample (``to_model_input``) instead of raising ``channels`` / ``sample_rate``.
      min_samples: shortest usable length, after conversion.
      finite: check for NaN/Inf samples (False: for a caller that checks the features and reports the file).
    Raises:
      AudioError: corrupt file, wrong rate or more than one channel (without ``convert``), 0 samples
        (``empty_file``), fewer than ``min_samples`` (``too_short``), a NaN/Inf sample (``non_finite``).
    """
    if convert and sample_rate is None:
        raise ValueError("decode(convert=True) needs the target sample_rate")
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(path, CORRUPT, f"libsndfile: {e}") from e
    if finite:
        check_finite(path, audio)
    if convert:
        check_length(path, converted_length(len(audio), rate, sample_rate), sample_rate, min_samples)
        return to_model_input(audio, rate, sample_rate)
    if sample_rate is not None and rate != sample_rate:
        raise AudioError(path, SAMPLE_RATE, f"{rate} Hz, expected {sample_rate} Hz")
    if audio.shape[1] != 1:
        raise AudioError(path, CHANNELS, f"{audio.shape[1]} channels, expected mono")
    check_length(path, len(audio), rate, min_samples)
    return audio[:, 0]


def read_blocks(path: str, sample_rate: int, block_samples: int = _BLOCK_FRAMES, convert: bool = False,
                min_samples: int = 0) -> Iterator[np.ndarray]:
    """``decode`` block by block: float32 arrays [<= block_samples] whose concatenation equals ``decode(path,
    sample_rate, convert, min_samples)`` (with ``convert``, to soxr's streaming-vs-one-shot rounding).

    Memory is one block (plus soxr's filter state), whatever the file length. Rate, channels and length are
    checked from the header before the first block; non-finite samples per block, naming the sample.

    Raises:
      AudioError: as ``decode``.
    """
    try:
        with sf.SoundFile(path) as f:
            info = AudioInfo(int(f.frames), int(f.samplerate), int(f.channels))
            check_info(path, info, sample_rate, min_samples, convert)
            resampler = soxr.ResampleStream(info.sample_rate, sample_rate, 1, "float32", RESAMPLER_QUALITY) \
                if info.sample_rate != sample_rate else None
            consumed = emitted = 0
            held = np.zeros([0], np.float32)  # resampled tail held back until the length is known
            while True:
                block = f.read(block_samples, dtype="float32", always_2d=True)
                check_finite(path, block, consumed)
                consumed += len(block)
                mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                if resampler is None:
                    if len(mono) == 0:
                        return
                    yield np.ascontiguousarray(mono, np.float32)
                    continue
                last = len(block) == 0
                held = np.concatenate([held, resampler.resample_chunk(mono, last=last)])
                if last:  # the count decode() gives: round(n * to / from) of the samples actually decoded
                    n = max(0, converted_length(consumed, info.sample_rate, sample_rate) - emitted)
                    yield held[:n] if len(held) >= n else np.pad(held, (0, n - len(held)))
                    return
                keep = min(len(held), 64)
                if len(held) > keep:
                    emitted += len(held) - keep
                    yield held[: len(held) - keep]
                    held = held[len(held) - keep:]
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(path, CORRUPT, f"libsndfile: {e}") from e


def min_samples_for(min_duration_s: float, sample_rate: int) -> int:
    """Number of samples in ``min_duration_s`` seconds (rounded up)."""
    return int(np.ceil(round(min_duration_s * sample_rate, 6)))
