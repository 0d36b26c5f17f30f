"""Streaming greedy RNN-T recognizer over the three signatures (LiteRT or the tf.Module they came from).

Dimension key: T feature frames (10 ms), CF chunk_frames, LA lookahead_frames, T' encoder frames, D
encoder dim, P predictor dim, V vocab.

Chunking follows ``omni_tf.model`` exactly: features ``[T, 80]`` are zero-padded to ``n*CF + LA`` frames
(``n = ceil(T/CF)``, at least 1); call ``c`` feeds frames ``[c*CF, c*CF + CF + LA)``; the first ``ceil(T/4)``
encoder frames are decoded. Greedy: the predictor starts from blank (id 0) on the zero state; per encoder
frame, up to ``max_symbols_per_frame`` non-blank argmaxes are emitted, each advancing the predictor.

Usage::

    rec = LiteRTRecognizer.from_tier_dir("exp/tiers/tier_0.7")
    tokens = rec.transcribe_features(features)    # features [T, 80], CMVN applied
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
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

    def encoder_frames(self, features: np.ndarray) -> np.ndarray:
        """features [T, 80] -> valid encoder frames [ceil(T/f), D] (f = chunk_frames / chunk_enc)."""
        wins, valid = chunk_windows(np.asarray(features, np.float32), self.layout["chunk_frames"],
                                    self.layout["lookahead_frames"],
                                    self.layout["chunk_frames"] // self.layout["chunk_enc"])
        cache = self._init("encoder_state")
        outs = []
        for win in wins:
            out = self._call("encode", self.encode, {"features_chunk": win[None], **cache})
            outs.append(np.asarray(out["encoder_frames"])[0])
            cache = {s["input"]: np.asarray(out[s["output"]]) for s in self.layout["encoder_state"]}
        return np.concatenate(outs, 0)[:valid]

    def decode_frames(self, frames: np.ndarray) -> list[int]:
        """Greedy over encoder frames [T', D] -> token ids (blank 0 never emitted)."""
        specs = self.layout["predictor_state"]

        def step(token: int, state: dict[str, np.ndarray]):
            out = self._call("predict", self.predict, {"token": np.array([[token]], np.int32), **state})
            return np.asarray(out["pred_out"]), {s["input"]: np.asarray(out[s["output"]]) for s in specs}

        pred, state = step(0, self._init("predictor_state"))
        tokens: list[int] = []
        for frame in frames:
            for _ in range(self.max_symbols):
                logp = self._call("join", self.join, {"encoder_frame": frame[None].astype(np.float32),
                                                      "pred_out": pred})
                k = int(np.argmax(np.asarray(logp["log_probs"])[0]))
                if k == 0:
                    break
                tokens.append(k)
                pred, state = step(k, state)
        return tokens

    def transcribe_features(self, features: np.ndarray) -> list[int]:
        return self.decode_frames(self.encoder_frames(features))


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
