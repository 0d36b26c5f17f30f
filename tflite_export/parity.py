"""TFLite vs Keras parity for one tier: tokens, WER, max abs diff per signature output.

Dimension key: T feature frames, U tokens. Inputs are CMVN-normalized features ``[T, 80]`` per utterance.

- Keras side: ``omni_tf.decoding.streaming_greedy_search(model, features [1,T,80])`` on the tier model (masks
  baked) when that module exists, else the same greedy loop over the float ``tf.Module`` signatures.
- TFLite side: ``LiteRTRecognizer`` (``recognizer.py``) over the converted bytes.
- Thresholds (``check_parity``): float32 needs identical tokens on >= 99% of utterances; float16 and int8
  modes (weights rounded: near-tied tokens may flip) need ``WER_tflite <= 1.03 * WER_keras`` against
  reference transcripts (without references: token error rate of TFLite vs Keras hypotheses <= 3%).
  WER and token error rate are ``omni_tf.metrics.wer`` / ``token_error_rate`` (jiwer, text normalized as
  everywhere else), so ``wer_keras`` here and ``wer_keras_test`` in REPORT.md count the same way.
  A failing tier raises ``ParityError`` with the numbers.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from omni_tf import metrics
from tflite_export.recognizer import LiteRTRecognizer, ModuleRecognizer, module_runners

FLOAT_MODES = ("float32",)  # tokens must match; float16 / int8 round the weights and are judged by WER
MIN_TOKEN_AGREEMENT = 0.99
MAX_WER_REL_INCREASE = 0.03


class ParityError(ValueError):
    """A tier's TFLite file does not match its Keras model closely enough."""


def keras_tokens(module, features: np.ndarray, max_symbols_per_frame: int = 4) -> list[int]:
    """Keras streaming greedy on the tier model (``omni_tf.decoding`` if present)."""
    try:
        from omni_tf import decoding  # noqa: PLC0415
    except ImportError:
        decoding = None
    if decoding is not None and hasattr(decoding, "streaming_greedy_search"):
        return [int(t) for t in decoding.streaming_greedy_search(module.model, np.asarray(features)[None])]
    return ModuleRecognizer(module, max_symbols_per_frame).transcribe_features(features)


def collect_representative(module, features_list: Iterable[np.ndarray], max_per_signature: int = 300,
                           seed: int = 0) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Calibration samples ``(signature, feeds)`` from the float streaming greedy loop over dev features.

    Every encode call's caches and every predict state are real (from running the loop), then each
    signature is subsampled uniformly to at most ``max_per_signature`` samples.
    """
    recorded: dict[str, list[dict[str, np.ndarray]]] = {"encode": [], "predict": [], "join": []}
    rec = ModuleRecognizer(module, record=lambda name, feeds: recorded[name].append(feeds))
    for feats in features_list:
        rec.transcribe_features(feats)
    rng = np.random.default_rng(seed)
    samples = []
    for name, feeds in recorded.items():
        if not feeds:
            raise ValueError(f"no {name} calls recorded: empty dev features?")
        idx = np.sort(rng.choice(len(feeds), min(len(feeds), max_per_signature), replace=False))
        samples += [(name, feeds[i]) for i in idx]
    return samples


def representative_fn(samples: Sequence[tuple[str, dict[str, np.ndarray]]]) -> Callable[[], Iterable]:
    """The converter's ``representative_dataset`` (a generator factory) over collected samples."""
    def gen():
        yield from samples
    return gen


def max_abs_diffs(module, content: bytes, samples: Sequence[tuple[str, dict[str, np.ndarray]]],
                  default_delegates: bool = True) -> dict[str, float]:
    """{"<signature>/<output>": max |keras - tflite|} over the same recorded inputs."""
    from tflite_export.convert import make_interpreter  # noqa: PLC0415

    interp = make_interpreter(content, 1, default_delegates)
    ref = dict(zip(("encode", "predict", "join"), module_runners(module), strict=True))
    diffs: dict[str, float] = {}
    for name, feeds in samples:
        want = ref[name](**feeds)
        got = interp.get_signature_runner(name)(**feeds)
        for key, value in want.items():
            d = float(np.max(np.abs(np.asarray(value, np.float64) - np.asarray(got[key], np.float64))))
            diffs[f"{name}/{key}"] = max(diffs.get(f"{name}/{key}", 0.0), d)
    return diffs


def run_parity(module, content: bytes, mode: str, features_list: Sequence[np.ndarray],
               references: Sequence[str] | None = None, decode: Callable[[list[int]], str] | None = None,
               default_delegates: bool = True, diff_utterances: int = 2,
               max_wer_rel_increase: float = MAX_WER_REL_INCREASE) -> dict[str, Any]:
    """Decodes every utterance with Keras and TFLite; returns the parity report (see ``check_parity``).

    ``max_wer_rel_increase``: the quantized modes' gate (WER, or token error rate without references).
    """
    if not features_list:
        raise ValueError("parity needs at least one utterance of dev features")
    layout = module.describe()
    recorded: list[tuple[str, dict[str, np.ndarray]]] = []
    keras_hyps, lite_hyps = [], []
    rec = LiteRTRecognizer(content, layout, default_delegates=default_delegates)
    for i, feats in enumerate(features_list):
        rec.record = (lambda n, f: recorded.append((n, f))) if i < diff_utterances else None
        lite_hyps.append(rec.transcribe_features(feats))
        keras_hyps.append(keras_tokens(module, feats))
    same = sum(k == t for k, t in zip(keras_hyps, lite_hyps, strict=True))
    report: dict[str, Any] = {
        "mode": mode, "utterances": len(features_list), "identical_tokens": same,
        "max_wer_rel_increase": float(max_wer_rel_increase),
        "token_agreement": same / len(features_list),
        "token_error_rate_vs_keras": metrics.token_error_rate(keras_hyps, lite_hyps),
        "max_abs_diff": max_abs_diffs(module, content, recorded, default_delegates),
    }
    if references is not None and decode is not None:
        report["wer_keras"] = metrics.wer(references, [decode(h) for h in keras_hyps])
        report["wer_tflite"] = metrics.wer(references, [decode(h) for h in lite_hyps])
    report["passed"], report["criterion"] = _verdict(report)
    return report


def _verdict(report: Mapping[str, Any]) -> tuple[bool, str]:
    if report["mode"] in FLOAT_MODES:
        ok = report["token_agreement"] >= MIN_TOKEN_AGREEMENT
        return ok, f"token agreement {report['token_agreement']:.4f} >= {MIN_TOKEN_AGREEMENT}"
    rel = float(report.get("max_wer_rel_increase", MAX_WER_REL_INCREASE))
    if "wer_tflite" in report:
        limit = report["wer_keras"] * (1 + rel)
        ok = report["wer_tflite"] <= limit + 1e-12
        return ok, (f"WER tflite {report['wer_tflite']:.4f} <= {limit:.4f} "
                    f"(keras {report['wer_keras']:.4f} +{100 * rel:g}% rel)")
    ter = report["token_error_rate_vs_keras"]
    return ter <= rel, f"token error rate vs keras {ter:.4f} <= {rel:g}"


def check_parity(report: Mapping[str, Any], label: str = "tier") -> None:
    """Raises ParityError with the numbers when the report failed its criterion."""
    if not report["passed"]:
        diffs = ", ".join(f"{k}={v:.3g}" for k, v in report["max_abs_diff"].items())
        raise ParityError(f"{label} ({report['mode']}) fails parity: {report['criterion']} is false; "
                          f"identical {report['identical_tokens']}/{report['utterances']}; "
                          f"max abs diff {diffs}")
