"""Streaming greedy RNN-T recognizer over the three signatures (LiteRT or the tf.Module they came from).

Dimension key: T feature frames (10 ms), CF chunk_frames, LA lookahead_frames, T' encoder frames, D
encoder dim, P predictor dim, V vocab.

Chunking follows ``omni_tf.model`` exactly: features ``[T, 80]`` are zero-padded to ``n*CF + LA`` frames
(``n = ceil(T/CF)``, at least 1); call ``c`` feeds frames ``[c*CF, c*CF + CF + LA)``; the first ``ceil(T/4)``
encoder frames are decoded. Greedy: the predictor starts from blank (id 0) on the zero state; per encoder
frame, up to ``max_symbols_per_frame`` non-blank argmaxes are emitted, each advancing the predictor.

Streaming end to end: ``transcribe_file`` reads the audio in blocks, featurizes chunk by chunk
(``stream_audio_features``), encodes each window as soon as its frames (and lookahead) have arrived and
decodes encoder frames as they come, so memory stays flat with the recording's length.

Usage::

    rec = LiteRTRecognizer.from_tier_dir("exp/tiers/tier_0.7")
    tokens = rec.transcribe_features(features)    # features [T, 80], CMVN applied
    tokens = rec.transcribe_file("long.flac", data_config, mean, std)
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

Runner = Callable[..., Mapping[str, np.ndarray]]


def chunk_windows(features: np.ndarray, chunk_frames: int, lookahead_frames: int,
                  subsampling: int = 4) -> tuple[list[np.ndarray], int]:
    """features [T, F] -> (windows [CF+LA, F] per call, number of valid encoder frames ceil(T/f))."""
    t = int(features.shape[0])
    n = max(math.ceil(t / chunk_frames), 1)
    padded = np.zeros([n * chunk_frames + lookahead_frames, features.shape[1]], np.float32)
    padded[:t] = features
    wins = [padded[c * chunk_frames: c * chunk_frames + chunk_frames + lookahead_frames] for c in range(n)]
    return wins, math.ceil(t / subsampling)


class StreamingGreedy:
    """Greedy streaming decoding over ``encode`` / ``predict`` / ``join`` runners.

    Runners take keyword inputs named as in the signatures and return {output name: array}. ``layout`` is
    ``StreamingInferenceModule.describe()`` (also stored in the manifest as ``"signatures"``).
    ``record`` (optional) receives ``(signature, feeds)`` for every call, e.g. to collect calibration data.
    """

    def __init__(self, encode: Runner, predict: Runner, join: Runner, layout: Mapping[str, Any],
                 max_symbols_per_frame: int = 4, record: Callable[[str, dict], None] | None = None):
        self.encode, self.predict, self.join = encode, predict, join
        self.layout = layout
        self.max_symbols = int(max_symbols_per_frame)
        self.record = record

    def _call(self, name: str, runner: Runner, feeds: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        if self.record is not None:
            self.record(name, {k: np.array(v) for k, v in feeds.items()})
        return runner(**feeds)

    def _init(self, key: str) -> dict[str, np.ndarray]:
        return {s["input"]: np.zeros(s["shape"], s["dtype"]) for s in self.layout[key]}

    def stream_encoder_frames(self, feature_chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Feature chunks [t_i, 80] (any sizes, in order) -> valid encoder frames [k_i, D] as windows fill.

        The windows are those of ``chunk_windows`` over the concatenated features, so the concatenated output
        equals ``encoder_frames(concatenated features)``; memory is one chunk plus one window, whatever the
        length.
        """
        cf, la = self.layout["chunk_frames"], self.layout["lookahead_frames"]
        sub = cf // self.layout["chunk_enc"]
        cache = self._init("encoder_state")
        buf = np.zeros([0, self.layout.get("num_mel_bins", 80)], np.float32)
        total = windows = 0

        def encode(win: np.ndarray) -> np.ndarray:
            nonlocal cache, windows
            out = self._call("encode", self.encode, {"features_chunk": win[None], **cache})
            cache = {s["input"]: np.asarray(out[s["output"]]) for s in self.layout["encoder_state"]}
            windows += 1
            return np.asarray(out["encoder_frames"])[0]

        for chunk in feature_chunks:
            chunk = np.asarray(chunk, np.float32)
            total += len(chunk)
            buf = np.concatenate([buf, chunk])
            while len(buf) >= cf + la:  # every frame of such a window is valid (window c < ceil(T/cf))
                yield encode(buf[: cf + la])
                buf = buf[cf:]
        emitted = windows * self.layout["chunk_enc"]
        remaining = max(math.ceil(total / cf), 1) - windows
        padded = np.zeros([remaining * cf + la, buf.shape[1]], np.float32)
        padded[: len(buf)] = buf
        valid = math.ceil(total / sub)
        for c in range(remaining):
            frames = encode(padded[c * cf: c * cf + cf + la])
            yield frames[: max(0, valid - emitted)]
            emitted += len(frames)

    def encoder_frames(self, features: np.ndarray) -> np.ndarray:
        """features [T, 80] -> valid encoder frames [ceil(T/f), D] (f = chunk_frames / chunk_enc)."""
        return np.concatenate(list(self.stream_encoder_frames([features])), 0)

    def decode_stream(self, frame_blocks: Iterable[np.ndarray]) -> list[int]:
        """Greedy over encoder frames given as blocks [k_i, D] -> token ids (blank 0 never emitted)."""
        specs = self.layout["predictor_state"]

        def step(token: int, state: dict[str, np.ndarray]):
            out = self._call("predict", self.predict, {"token": np.array([[token]], np.int32), **state})
            return np.asarray(out["pred_out"]), {s["input"]: np.asarray(out[s["output"]]) for s in specs}

        pred, state = step(0, self._init("predictor_state"))
        tokens: list[int] = []
        for frame in (f for block in frame_blocks for f in block):
            for _ in range(self.max_symbols):
                logp = self._call("join", self.join, {"encoder_frame": frame[None].astype(np.float32),
                                                      "pred_out": pred})
                k = int(np.argmax(np.asarray(logp["log_probs"])[0]))
                if k == 0:
                    break
                tokens.append(k)
                pred, state = step(k, state)
        return tokens

    def decode_frames(self, frames: np.ndarray) -> list[int]:
        """Greedy over encoder frames [T', D] -> token ids (blank 0 never emitted)."""
        return self.decode_stream([frames])

    def transcribe_features(self, features: np.ndarray) -> list[int]:
        return self.decode_stream(self.stream_encoder_frames([features]))

    def transcribe_file(self, path: str, data_config, mean: np.ndarray | None = None,
                        std: np.ndarray | None = None, min_samples: int = 0) -> list[int]:
        """Audio file -> token ids, streaming end to end (``stream_audio_features``): memory does not grow
        with the recording's length."""
        feats = stream_audio_features(path, data_config, mean, std, min_samples)
        return self.decode_stream(self.stream_encoder_frames(feats))


class LiteRTRecognizer(StreamingGreedy):
    """StreamingGreedy over ``ai_edge_litert`` signature runners of one .tflite file."""

    def __init__(self, model: bytes | str, layout: Mapping[str, Any], num_threads: int = 1,
                 default_delegates: bool = True, max_symbols_per_frame: int = 4, record=None):
        from tflite_export.convert import make_interpreter  # noqa: PLC0415

        content = model if isinstance(model, bytes | bytearray) else open(model, "rb").read()
        self.interpreter = make_interpreter(bytes(content), num_threads, default_delegates)
        runners = {k: self.interpreter.get_signature_runner(k) for k in ("encode", "predict", "join")}
        super().__init__(runners["encode"], runners["predict"], runners["join"], layout,
                         max_symbols_per_frame, record)

    @classmethod
    def from_tier_dir(cls, tier_dir: str, num_threads: int = 1, **kwargs) -> LiteRTRecognizer:
        """From ``<tier_dir>/model.tflite`` + ``manifest.json`` (layout + interpreter options)."""
        with open(os.path.join(tier_dir, "manifest.json")) as f:
            manifest = json.load(f)
        opts = manifest.get("interpreter_options", {})
        return cls(os.path.join(tier_dir, "model.tflite"), manifest["signatures"], num_threads=num_threads,
                   default_delegates=bool(opts.get("use_default_delegates", True)), **kwargs)


def module_runners(module) -> tuple[Runner, Runner, Runner]:
    """Runners over a ``StreamingInferenceModule``'s tf.functions (numpy in/out, keyword inputs)."""
    layout = module.describe()
    order = {"encode": ["features_chunk"] + [s["input"] for s in layout["encoder_state"]],
             "predict": ["token"] + [s["input"] for s in layout["predictor_state"]],
             "join": ["encoder_frame", "pred_out"]}

    def make(name: str) -> Runner:
        fn = getattr(module, name)

        def run(**feeds):
            out = fn(*[feeds[k] for k in order[name]])
            return {k: v.numpy() for k, v in out.items()}
        return run

    return make("encode"), make("predict"), make("join")


class ModuleRecognizer(StreamingGreedy):
    """The same greedy loop over the float tf.Module (the Keras model with the tier's masks baked in)."""

    def __init__(self, module, max_symbols_per_frame: int = 4, record=None):
        super().__init__(*module_runners(module), module.describe(), max_symbols_per_frame, record)


def frontend_config(frontend: Mapping[str, Any]):
    """The manifest's ``frontend`` dict -> a data ConfigDict for ``omni_tf.data.features.log_mel``."""
    from omni_tf.configs import data as data_configs  # noqa: PLC0415

    config = data_configs.get_config()
    for key, value in frontend.items():
        if key in config and not key.startswith("cmvn"):
            config[key] = value
    return config


def stream_audio_features(path: str, data_config, mean: np.ndarray | None = None,
                          std: np.ndarray | None = None, min_samples: int = 0, block_samples: int = 1 << 16
                          ) -> Iterator[np.ndarray]:
    """``audio_features`` chunk by chunk: log-mel [t_i, 80] (+ CMVN) from ``block_samples`` blocks read,
    down-mixed and resampled as they come (``audio.read_blocks``) and featurized with the window overlap
    carried over (``features.log_mel_stream``). The concatenation equals ``audio_features(path, ...)``;
    memory is bounded by the block size. Raises AudioError as ``audio_features`` (length errors before the
    first chunk)."""
    from omni_tf.data import audio as audio_lib  # noqa: PLC0415
    from omni_tf.data import features as features_lib  # noqa: PLC0415

    blocks = audio_lib.read_blocks(path, data_config.sample_rate, block_samples, convert=True,
                                   min_samples=min_samples)
    for feats in features_lib.log_mel_stream(blocks, data_config):
        if mean is not None:
            feats = features_lib.apply_cmvn(feats, mean, std)
        yield np.asarray(feats, np.float32)


def audio_features(path: str, data_config, mean: np.ndarray | None = None,
                   std: np.ndarray | None = None, min_samples: int = 0) -> np.ndarray:
    """Audio file -> log-mel [T, 80] (+ CMVN when mean/std are given), the training front-end.

    Audio that is not ``data_config.sample_rate`` mono is down-mixed and resampled (soxr); fewer than
    ``min_samples`` samples after that raises ``omni_tf.data.audio.AudioError`` (``empty_file`` /
    ``too_short``).
    """
    from omni_tf.data import audio as audio_lib  # noqa: PLC0415
    from omni_tf.data import features as features_lib  # noqa: PLC0415

    wave = audio_lib.decode(path, data_config.sample_rate, convert=True, min_samples=min_samples)
    feats = features_lib.log_mel(wave, data_config)
    if mean is not None:
        feats = features_lib.apply_cmvn(feats, mean, std)
    return np.asarray(feats, np.float32)
