"""Audio decoding and checks with soundfile (libsndfile); no TensorFlow here.

Policy (also in docs/BENCHMARKS.md "Input pipeline"): audio must already be 16 kHz mono. Files at another
rate or with more than one channel are *rejected and reported* (kind ``sample_rate`` / ``channels``), not
resampled or down-mixed: LibriSpeech is 16 kHz mono, so anything else means a wrong or damaged corpus, and
silent conversion would hide it.

Corruption check (``probe``): ``check="full"`` decodes every frame and compares the count with the header;
``check="header"`` reads the header and then seeks to and decodes the last block, which catches garbage files
and truncated FLAC streams at a fraction of the cost, but not damage in the middle of a stream.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import soundfile as sf

# Problem kinds reported for audio files.
EMPTY_FILE = "empty_file"
CORRUPT = "corrupt"
SAMPLE_RATE = "sample_rate"
CHANNELS = "channels"
TOO_SHORT = "too_short"

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


def probe(path: str, check: str = "full") -> AudioInfo:
    """Reads the header of ``path`` and verifies the stream decodes (see module docstring for ``check``).

    Raises:
      AudioError: kind ``empty_file`` (0 bytes) or ``corrupt`` (undecodable, or fewer frames than the header).
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
                    decoded += len(block)
            else:
                f.seek(max(0, info.num_samples - _TAIL_FRAMES))
                decoded = f.tell() + len(f.read(_TAIL_FRAMES, dtype="float32", always_2d=True))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(path, CORRUPT, f"libsndfile: {e}") from e
    if decoded != info.num_samples:
        raise AudioError(path, CORRUPT, f"decoded {decoded} frames, header declares {info.num_samples}")
    return info


def check_info(path: str, info: AudioInfo, sample_rate: int, min_samples: int) -> None:
    """Raises AudioError (``sample_rate``, ``channels``, ``too_short``) if ``info`` is unusable."""
    if info.sample_rate != sample_rate:
        raise AudioError(path, SAMPLE_RATE, f"{info.sample_rate} Hz, expected {sample_rate} Hz")
    if info.channels != 1:
        raise AudioError(path, CHANNELS, f"{info.channels} channels, expected mono")
    if info.num_samples < min_samples:
        raise AudioError(
            path, TOO_SHORT, f"{info.num_samples} samples ({info.duration_s * 1000:.0f} ms) < minimum "
            f"{min_samples} samples ({min_samples / sample_rate * 1000:.0f} ms)")


def decode(path: str, sample_rate: int | None = None) -> np.ndarray:
    """Decodes a mono file to float32 samples in [-1, 1], shape [num_samples].

    Raises:
      AudioError: corrupt file, wrong rate (when ``sample_rate`` is given) or more than one channel.
    """
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(path, CORRUPT, f"libsndfile: {e}") from e
    if sample_rate is not None and rate != sample_rate:
        raise AudioError(path, SAMPLE_RATE, f"{rate} Hz, expected {sample_rate} Hz")
    if audio.shape[1] != 1:
        raise AudioError(path, CHANNELS, f"{audio.shape[1]} channels, expected mono")
    return audio[:, 0]


def min_samples_for(min_duration_s: float, sample_rate: int) -> int:
    """Number of samples in ``min_duration_s`` seconds (rounded up)."""
    return int(np.ceil(round(min_duration_s * sample_rate, 6)))
