"""One tier on disk: ``<out>/<tier>/{model.tflite, spm.model, manifest.json, android_benchmark.sh}``.

``export_tier`` is the library entry (the demo and ``recipes/librispeech/export.py`` call it): tier module ->
TFLite (``convert.py``) -> parity against Keras (``parity.py``; a failing tier raises ``ParityError`` and
nothing is written) -> local LiteRT latency -> files + manifest, written by ``write_tier``: the tier folder is
built aside and swapped in whole, with a completion record (``COMPLETE.json``: size + SHA-256 of every file)
written last; ``read_tier`` refuses a folder whose record is missing or disagrees. ``write_report`` /
``pareto_plot`` summarize several tiers; ``parse_benchmark_output`` reads pasted ``benchmark_model`` output
(from the Android script).

Manifest keys (``MANIFEST_KEYS``): tier, quantization, sparse_encoded, sparsity (level config summary and
per-kernel sparsity), params, nonzero_params, bytes_on_disk, frontend (sample rate, window/hop ms, mel bins,
fft, mel edges, log floor, CMVN mean/std), chunk_ms, lookahead_ms, vocab_size, wer (keras, tflite, parity
numbers), latency (local LiteRT, 1 thread), interpreter_options, signatures (layout for the recognizer),
files.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from omni_tf import fileio
from tflite_export import convert as convert_lib
from tflite_export import inference_model as im
from tflite_export import parity as parity_lib
from tflite_export.recognizer import LiteRTRecognizer

MANIFEST_KEYS = ("tier", "quantization", "sparse_encoded", "sparsity", "params", "nonzero_params",
                 "bytes_on_disk", "frontend", "chunk_ms", "lookahead_ms", "vocab_size", "wer", "latency",
                 "interpreter_options", "signatures", "files", "ops")
FRAME_MS = 10.0
DEVICE_DIR = "/data/local/tmp/omni_tf"


# ---------------------------------------------------------------------------------------------------------
# Local latency (LiteRT on this CPU)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def measure_latency(content: bytes, layout: Mapping[str, Any], features_list: Sequence[np.ndarray],
                    num_threads: int = 1, runs: int = 50, default_delegates: bool = True,
                    repeats: int = 3) -> dict[str, Any]:
    """Per-signature median ms (``runs`` calls on recorded real inputs) and streaming RTF / ms per chunk.

    RTF = wall time of full streaming recognition (encode + greedy predict/join) / audio duration, with the
    audio duration taken as ``T * 10 ms`` of the features; the fastest of ``repeats`` passes.
    ``rss_delta_mb``: resident memory added by creating the interpreter and running it (this process; the
    benchmark script measures peak memory in a fresh process).
    """
    rss0 = _rss_mb()
    recorded: dict[str, list[dict]] = {"encode": [], "predict": [], "join": []}
    rec = LiteRTRecognizer(content, layout, num_threads=num_threads, default_delegates=default_delegates,
                           record=lambda n, f: recorded[n].append(f))
    rec.transcribe_features(features_list[0])  # warm-up + inputs to time
    rec.record = None
    audio_s = sum(f.shape[0] for f in features_list) * FRAME_MS / 1000.0
    chunks = sum(max(-(-f.shape[0] // layout["chunk_frames"]), 1) for f in features_list)
    passes = []
    for _ in range(repeats):  # best of `repeats`: the machine is shared, interference only adds time
        t0 = time.perf_counter()
        for feats in features_list:
            rec.transcribe_features(feats)
        passes.append(time.perf_counter() - t0)
    total_s = min(passes)
    medians = {}
    for name, feeds in recorded.items():
        runner = rec.interpreter.get_signature_runner(name)
        times = []
        for i in range(runs):
            f = feeds[i % len(feeds)]
            t0 = time.perf_counter()
            runner(**f)
            times.append(time.perf_counter() - t0)
        medians[name] = float(np.median(times) * 1e3)
    return {"num_threads": num_threads, "median_ms": medians, "rtf": total_s / max(audio_s, 1e-9),
            "ms_per_chunk_streaming": total_s * 1e3 / max(chunks, 1), "audio_s": audio_s,
            "rss_delta_mb": round(_rss_mb() - rss0, 2)}


# ---------------------------------------------------------------------------------------------------------
# Android benchmark script and its output


def android_benchmark_script(tier: str, layout: Mapping[str, Any], content: bytes, num_runs: int = 200,
                             threads: Sequence[int] = (1, 4), use_xnnpack: bool = True) -> str:
    """adb push + one ``benchmark_model`` command per signature and thread count, valid for the stock tool.

    Every command names and shapes every input of its signature (``--input_layer`` / ``--input_layer_shape``,
    in the signature subgraph's input order, which is how the tool matches them) and gives integer inputs
    (the predictor's ``token``) the value range 1..V-1 (real non-blank pieces; the tool's default for int32 is
    0..99). The stock tool's rules, read from tensorflow/lite/tools/benchmark/benchmark_tflite_model.cc: a
    ``--input_layer_value_range`` name must be one of ``--input_layer`` (else a FATAL abort), the counts of
    names and shapes must match, the number of names must equal the signature's inputs, each shape has the
    input's rank; value ranges are ``name,low,high`` items joined by ``:``, so names must not contain ``,``
    or ``:`` (we use the signature input names; the tool only warns that they differ from tensor names).
    ``tests/test_export_bundle.py`` checks generated scripts against a model of these rules.
    Values are shell-quoted twice: ``adb shell`` joins its arguments and the device shell splits them again.
    ``use_xnnpack=False`` for files that need default delegates off (manifest ``interpreter_options``).
    (Tier names are validated where they enter, ``export_tier`` / ``write_tier`` and the recipes; the quoting
    here holds for any value.)
    """
    remote_dir = f"{DEVICE_DIR}/{tier}"
    remote = f"{remote_dir}/model.tflite"
    vocab = int(layout["vocab_size"])
    inputs = convert_lib.signature_inputs(content)
    lines = ["#!/bin/sh", "# Usage: BENCHMARK_MODEL=/data/local/tmp/benchmark_model sh android_benchmark.sh",
             "# (benchmark_model: the TFLite/LiteRT Android benchmark binary, pushed once by you).", "set -e",
             'BM="${BENCHMARK_MODEL:-/data/local/tmp/benchmark_model}"',
             "adb shell " + shlex.quote(f"mkdir -p {shlex.quote(remote_dir)}"),
             f'adb push "$(dirname "$0")/model.tflite" {shlex.quote(remote)}']
    for sig in ("encode", "predict", "join"):
        names = [name for name, _, _ in inputs[sig]]
        bad = [n for n in names if "," in n or ":" in n]
        if bad:
            raise ValueError(f"{tier}: input names {bad} of signature {sig} contain ',' or ':'")
        shapes = ":".join(",".join(str(d) for d in shape) for _, shape, _ in inputs[sig])
        ranges = ":".join(f"{name},1,{vocab - 1}" for name, _, dtype in inputs[sig]
                          if dtype.startswith("INT"))
        for n in threads:
            args = [f"--graph={remote}", f"--signature_to_run_for={sig}", f"--num_threads={int(n)}",
                    f"--use_xnnpack={str(use_xnnpack).lower()}", f"--num_runs={int(num_runs)}",
                    "--warmup_runs=20", "--report_peak_memory_footprint=true",
                    f"--input_layer={','.join(names)}", f"--input_layer_shape={shapes}"]
            if ranges:
                args.append(f"--input_layer_value_range={ranges}")
            remote_cmd = " ".join(shlex.quote(a) for a in args)
            lines.append('adb shell "$BM" ' + shlex.quote(remote_cmd))
    return "\n".join(lines) + "\n"


def parse_benchmark_script(text: str) -> list[dict[str, str]]:
    """The ``benchmark_model`` commands of a script as {flag: value} dicts (for checks and tests).

    Undoes both quoting levels (the local shell's, then the device shell's).
    """
    cmds = []
    for line in text.splitlines():
        if not line.startswith('adb shell "$BM"'):
            continue
        flags = {}
        for remote in shlex.split(line)[3:]:
            for tok in shlex.split(remote):
                key, _, value = tok.partition("=")
                flags[key.lstrip("-")] = value
        cmds.append(flags)
    return cmds


_STAT = re.compile(r"(count|first|curr|min|max|avg|std|median|p50)=([0-9.e+-]+)")


def parse_benchmark_output(text: str) -> dict[str, float | None]:
    """Pasted ``benchmark_model`` output -> avg/median latency (ms), init ms, memory (MB).

    Reads ``Inference timings in us: ... Inference (avg): X``, the last ``count=... avg=... [median=...]``
    line (the timed runs), ``Memory footprint delta ... overall=M`` and ``Overall peak memory footprint (MB)
    via periodic monitoring: P``. Missing items are None.
    """
    out: dict[str, float | None] = {"avg_ms": None, "median_ms": None, "init_ms": None,
                                    "memory_overall_mb": None, "peak_memory_mb": None}
    stats = [dict(_STAT.findall(line)) for line in text.splitlines() if "count=" in line and "avg=" in line]
    if stats:
        last = stats[-1]
        out["avg_ms"] = float(last["avg"]) / 1e3
        med = last.get("median", last.get("p50"))
        out["median_ms"] = float(med) / 1e3 if med is not None else None
    m = re.search(r"Inference \(avg\):\s*([0-9.e+]+)", text)
    if m:
        out["avg_ms"] = float(m.group(1)) / 1e3
    m = re.search(r"Init:\s*([0-9.e+]+)", text)
    if m:
        out["init_ms"] = float(m.group(1)) / 1e3
    m = re.search(r"Memory footprint delta.*?overall=([0-9.]+)", text)
    if m:
        out["memory_overall_mb"] = float(m.group(1))
    m = re.search(r"peak memory footprint \(MB\)[^:]*:\s*([0-9.]+)", text, re.IGNORECASE)
    if m:
        out["peak_memory_mb"] = float(m.group(1))
    return out


# ---------------------------------------------------------------------------------------------------------
# Export


def frontend_params(data_config, cmvn: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Any]:
    keys = ("sample_rate", "num_mel_bins", "frame_length_ms", "frame_step_ms", "fft_length", "lower_edge_hz",
            "upper_edge_hz", "log_floor")
    params = {k: data_config[k] for k in keys if k in data_config} if data_config is not None else {}
    if cmvn is not None:
        params["cmvn_mean"] = [float(v) for v in cmvn[0]]
        params["cmvn_std"] = [float(v) for v in cmvn[1]]
    return params


def _tier_summary(tier: im.TierSpec, levels: Sequence[float] | None) -> dict[str, Any]:
    if tier is None:
        return {"kind": "as_trained_masks"}
    if isinstance(tier, Mapping):
        counts: dict[int, int] = {}
        for v in tier.values():
            counts[int(v)] = counts.get(int(v), 0) + 1
        return {"kind": "per_kernel", "config": {k: int(v) for k, v in tier.items()},
                "level_histogram": {str(k): c for k, c in sorted(counts.items())}}
    out: dict[str, Any] = {"kind": "uniform", "level_index": int(tier)}
    if levels is not None:
        out["level_sparsity"] = float(levels[int(tier)])
    return out


AUTO = "auto"
AUTO_MAX_LATENCY_RATIO = 1.2


def select_quantization(candidates: Sequence[Mapping[str, Any]],
                        max_latency_ratio: float = AUTO_MAX_LATENCY_RATIO) -> tuple[str, str]:
    """``--quantization=auto``'s rule: the smallest passing file whose encode latency is within the ratio.

    Args:
      candidates: one mapping per mode with ``mode``, ``bytes`` (file size), ``parity_passed`` (bool) and
        ``encode_ms`` (LiteRT median ms of the encode signature, 1 thread); failed conversions may be
        given with ``parity_passed`` False.
      max_latency_ratio: a mode qualifies if its encode_ms <= this x the fastest passing mode's.
    Returns:
      (chosen mode, why: one sentence with the numbers). Ties in bytes go to the faster mode.
    Raises:
      ValueError: no candidate passes parity.
    """
    passing = [c for c in candidates if c.get("parity_passed")]
    if not passing:
        raise ValueError("no quantization mode passes parity: " + ", ".join(
            f"{c['mode']} ({c.get('criterion') or c.get('error')})" for c in candidates))
    fastest = min(passing, key=lambda c: c["encode_ms"])
    limit = max_latency_ratio * fastest["encode_ms"]
    fast_enough = [c for c in passing if c["encode_ms"] <= limit]
    chosen = min(fast_enough, key=lambda c: (c["bytes"], c["encode_ms"]))
    slow = sorted(c["mode"] for c in passing if c["encode_ms"] > limit)
    failed = sorted(c["mode"] for c in candidates if not c.get("parity_passed"))
    why = (f"{chosen['mode']}: smallest ({chosen['bytes']} B) of the modes passing parity with encode "
           f"{chosen['encode_ms']:.4g} ms <= {max_latency_ratio:g} x fastest passing "
           f"({fastest['mode']}, {fastest['encode_ms']:.4g} ms)"
           + (f"; too slow: {', '.join(slow)}" if slow else "")
           + (f"; failed parity or conversion: {', '.join(failed)}" if failed else ""))
    return chosen["mode"], why


def _convert_and_check(module, layout, mode: str, dev_features, rep, *, sparse, int8_keep_float, tokenizer,
                       references, max_wer_rel_increase, latency_runs):
    """(ConversionResult, parity report, latency dict) of one mode; parity is not enforced here."""
    result = convert_lib.convert_module(module, mode, rep if mode == "int8" else None, sparse=sparse,
                                        int8_keep_float=int8_keep_float)
    use_default = bool(result.interpreter_options.get("use_default_delegates", True))
    decode = tokenizer.decode if tokenizer is not None else None
    report = parity_lib.run_parity(module, result.content, mode, dev_features,
                                   references if decode else None, decode, use_default,
                                   max_wer_rel_increase=max_wer_rel_increase)
    latency = measure_latency(result.content, layout, dev_features[:4], 1, latency_runs, use_default)
    return result, report, latency


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """How a tier is converted, checked, timed and labelled.

    quantization: one of ``convert.QUANT_MODES``, or ``"auto"``: every mode of ``auto_modes`` is converted,
    checked and timed, and ``select_quantization`` picks the file to write (the manifest's ``auto`` records
    every candidate); sparse: sparse tensor encoding (auto | never | always); series: report/Pareto series
    name ("omni", "individually-pruned", ...); calib_utterances / calib_per_signature: int8 calibration =
    the streaming loop over the first ``calib_utterances`` of the calibration features, at most
    ``calib_per_signature`` samples per signature; latency_runs: timed calls per signature; enforce_parity:
    raise ``ParityError`` (and write nothing) on a failed parity check; int8_keep_float: op groups int8
    keeps float (``convert.INT8_FLOAT_GROUPS``); max_wer_rel_increase: the parity gate of float16 / int8
    modes (relative WER increase).
    """

    quantization: str = "dynamic_int8"
    sparse: str = "auto"
    series: str = "omni"
    calib_utterances: int = 20
    calib_per_signature: int = 300
    latency_runs: int = 50
    enforce_parity: bool = True
    int8_keep_float: tuple[str, ...] = tuple(convert_lib.INT8_KEEP_FLOAT)
    max_wer_rel_increase: float = parity_lib.MAX_WER_REL_INCREASE
    auto_modes: tuple[str, ...] = tuple(convert_lib.QUANT_MODES)


@dataclasses.dataclass(frozen=True)
class ParitySet:
    """The utterances a tier is checked, calibrated and timed on, and the front-end it records.

    features: CMVN-normalized features ``[T, 80]`` per utterance (parity, latency; calibration unless
    ``calib_features``); references / tokenizer: for WER (Keras vs TFLite), ``tokenizer.model_path`` is
    copied as spm.model; data_config / cmvn: the front-end written to the manifest.
    """

    features: Sequence[np.ndarray]
    references: Sequence[str] | None = None
    tokenizer: Any = None
    calib_features: Sequence[np.ndarray] | None = None
    data_config: Any = None
    cmvn: tuple[np.ndarray, np.ndarray] | None = None


def export_tier(baked: im.BakedTier, tier_name: str, out_dir: str, data: ParitySet,
                options: ExportOptions = ExportOptions()) -> dict[str, Any]:
    """Converts, checks and writes one tier (``<out_dir>/<tier_name>/``); returns its manifest.

    ``baked``: ``inference_model.bake_supernet(supernet, tier)`` (a trained supernet) or
    ``inference_model.bake(model, model_config, tier, ...)``.
    Raises:
      ParityError (nothing written) when TFLite disagrees with Keras beyond the thresholds in parity.py
      (with ``auto``: when no mode passes).
      ValueError (before any work) when ``tier_name`` is not a safe name (``omni_tf.fileio.check_name``).
    """
    fileio.check_name(tier_name, "tier name")
    module, model_config, tier, levels, block = (baked.module, baked.model_config, baked.tier, baked.levels,
                                                 baked.block)
    dev_features, references, tokenizer = data.features, data.references, data.tokenizer
    calib_features, data_config, cmvn = data.calib_features, data.data_config, data.cmvn
    o = options
    quantization, sparse, series, enforce_parity = o.quantization, o.sparse, o.series, o.enforce_parity
    calib_utterances, calib_per_signature, latency_runs = o.calib_utterances, o.calib_per_signature, \
        o.latency_runs
    int8_keep_float, max_wer_rel_increase, auto_modes = list(o.int8_keep_float), o.max_wer_rel_increase, \
        o.auto_modes
    layout = module.describe()
    modes = list(auto_modes) if quantization == AUTO else [quantization]
    rep, calib = None, None
    if "int8" in modes:
        calib = dev_features if calib_features is None else calib_features
        samples = parity_lib.collect_representative(module, calib[:calib_utterances], calib_per_signature)
        rep = parity_lib.representative_fn(samples)
    checked, candidates = {}, []
    for mode in modes:
        try:
            checked[mode] = _convert_and_check(
                module, layout, mode, dev_features, rep, sparse=sparse, int8_keep_float=int8_keep_float,
                tokenizer=tokenizer, references=references, max_wer_rel_increase=max_wer_rel_increase,
                latency_runs=latency_runs)
        except (ValueError, RuntimeError) as e:  # one mode failing to convert must not end auto
            if quantization != AUTO:
                raise
            candidates.append({"mode": mode, "parity_passed": False, "error": f"{type(e).__name__}: {e}"})
            continue
        result, report, latency = checked[mode]
        candidates.append({"mode": mode, "bytes": len(result.content),
                           "parity_passed": bool(report["passed"]),
                           "criterion": report.get("criterion"), "wer_tflite": report.get("wer_tflite"),
                           "token_error_rate_vs_keras": report.get("token_error_rate_vs_keras"),
                           "encode_ms": latency["median_ms"]["encode"], "rtf": latency["rtf"]})
    auto = None
    if quantization == AUTO:
        try:
            quantization, why = select_quantization(candidates)
        except ValueError as e:
            raise parity_lib.ParityError(f"{tier_name}: {e}") from e
        auto = {"rule": f"smallest file passing parity with encode latency <= {AUTO_MAX_LATENCY_RATIO:g} x "
                        "the fastest passing mode", "chosen": quantization, "why": why,
                "candidates": candidates}
    result, report, latency = checked[quantization]
    if enforce_parity:
        parity_lib.check_parity(report, tier_name)
    use_default = bool(result.interpreter_options.get("use_default_delegates", True))
    files = {"model": "model.tflite", "manifest": "manifest.json",
             "android_benchmark": "android_benchmark.sh"}
    spm_path = getattr(tokenizer, "model_path", None) if tokenizer is not None else None
    if spm_path:
        files["spm"] = "spm.model"
    summary = im.sparsity_summary(module.model)
    cfg = dict(model_config)
    details = result.quantizer or {}
    manifest = {
        "tier": tier_name, "series": series, "quantization": quantization,
        "sparse_encoded": result.sparse_encoded,
        "sparsity": {**_tier_summary(tier, levels), **{k: v for k, v in summary.items() if k != "params"},
                     "levels": list(levels) if levels is not None else None, "block": str(block)},
        "params": summary["params"], "nonzero_params": summary["nonzero_params"],
        "bytes_on_disk": len(result.content),
        "bytes_dense_encoding": result.dense_bytes, "bytes_sparse_encoding": result.sparse_bytes,
        "frontend": frontend_params(data_config, cmvn), "chunk_ms": cfg.get("chunk_ms"),
        "lookahead_ms": cfg.get("lookahead_ms"), "vocab_size": layout["vocab_size"],
        "wer": {"keras": report.get("wer_keras"), "tflite": report.get("wer_tflite"), "parity": report},
        "latency": latency, "interpreter_options": result.interpreter_options,
        "conversion_notes": result.notes,
        "quantizer": ({k: v for k, v in details.items() if k in ("library", "recipe")} or None),
        "calibration": ({"utterances": min(calib_utterances, len(calib)),
                         "source": "dev_features" if calib_features is None else "calib_features",
                         "max_per_signature": calib_per_signature,
                         **{k: v for k, v in details.items() if k not in ("library", "recipe")}}
                        if quantization == "int8" else None),
        "auto": auto,
        "signatures": layout, "files": files, "ops": result.op_counts, "model_config": cfg,
    }
    write_tier(out_dir, tier_name, result.content, manifest,
               android_benchmark_script(tier_name, layout, result.content, use_xnnpack=use_default), spm_path)
    return manifest


TIER_RECORD_KIND = "tier"


def write_tier(out_dir: str, tier_name: str, content: bytes, manifest: Mapping[str, Any], script: str,
               spm_path: str | None = None) -> str:
    """Writes ``<out_dir>/<tier_name>/`` whole: built in a temporary sibling folder, completion record
    (``omni_tf.fileio.RECORD``: size + SHA-256 of every file, spec = tier name, quantization, series) last,
    then swapped in, so a reader finds the old tier or the new one. Returns the tier folder.

    Raises:
      ValueError for an unsafe ``tier_name``; OSError naming the file that could not be written (nothing of
      the new tier is left behind, the old one stays).
    """
    fileio.check_name(tier_name, "tier name")
    final = os.path.join(out_dir, tier_name)
    with fileio.build_dir(final) as tmp:
        fileio.write_bytes(os.path.join(tmp, "model.tflite"), content)
        if spm_path:
            fileio.copy_file(spm_path, os.path.join(tmp, "spm.model"))
        fileio.write_text(os.path.join(tmp, "android_benchmark.sh"), script)
        fileio.write_json(os.path.join(tmp, "manifest.json"), manifest, default=_json_default)
        spec = {k: manifest.get(k) for k in ("tier", "quantization", "series")}
        fileio.write_record(tmp, TIER_RECORD_KIND, spec, os.listdir(tmp))
    return final


def read_tier(tier_dir: str) -> dict[str, Any]:
    """The manifest of a whole tier folder: its completion record present and matching every file.

    Raises:
      omni_tf.fileio.IncompleteOutput naming the file (missing record, size or SHA-256 mismatch).
    """
    fileio.verify_record(tier_dir, TIER_RECORD_KIND)
    with open(os.path.join(tier_dir, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj)}")


def validate_manifest(manifest: Mapping[str, Any]) -> None:
    """ValueError naming missing keys / bad values (schema check used by tests and transcribe)."""
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"manifest misses keys {missing}")
    if manifest["quantization"] not in convert_lib.QUANT_MODES:
        raise ValueError(f"manifest quantization {manifest['quantization']!r} unknown")
    for key in ("chunk_frames", "lookahead_frames", "encoder_state", "predictor_state", "vocab_size"):
        if key not in manifest["signatures"]:
            raise ValueError(f"manifest signatures misses {key!r}")


# ---------------------------------------------------------------------------------------------------------
# Reports


def load_bundle(bundle_dir: str) -> list[dict[str, Any]]:
    """Manifests of every tier ``<bundle_dir>/*/manifest.json`` (``read_tier``), sorted by bytes on disk."""
    rows = []
    for name in sorted(os.listdir(bundle_dir)):
        if os.path.isfile(os.path.join(bundle_dir, name, "manifest.json")):
            rows.append(read_tier(os.path.join(bundle_dir, name)))
    return sorted(rows, key=lambda m: m["bytes_on_disk"])


def report_rows(manifests: Sequence[Mapping[str, Any]], series: str = "omni") -> list[dict[str, Any]]:
    return [{"tier": m["tier"], "series": m.get("series", series), "quantization": m["quantization"],
             "sparse_encoded": m["sparse_encoded"], "sparsity": m["sparsity"].get("prunable_sparsity"),
             "nonzero_params": m["nonzero_params"], "bytes": m["bytes_on_disk"],
             "wer_keras": m["wer"].get("keras"), "wer_tflite": m["wer"].get("tflite"),
             "token_agreement": m["wer"]["parity"]["token_agreement"],
             "encode_ms": m["latency"]["median_ms"]["encode"], "rtf": m["latency"]["rtf"]} for m in manifests]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_report(rows: Sequence[Mapping[str, Any]], path: str, title: str = "TFLite tiers",
                 device_results: Mapping[str, str] | None = None) -> str:
    """Markdown report of tier rows (+ parsed pasted ``benchmark_model`` outputs per tier); returns text."""
    text = f"# {title}\n\n" + markdown_table(rows)
    if device_results:
        parsed = [{"tier": k, **parse_benchmark_output(v)} for k, v in device_results.items()]
        text += "\n## On device (benchmark_model)\n\n" + markdown_table(parsed)
    fileio.write_text(path, text)
    return text


def pareto_plot(rows: Sequence[Mapping[str, Any]], png: str, wer_key: str = "wer_tflite",
                x_key: str = "bytes", x_label: str = "model.tflite size (MB)", x_scale: float = 1e-6,
                y_label: str = "WER (%)") -> str:
    """WER vs ``x_key`` (default: bytes on disk), one series per ``row["series"]`` (omni, pruned...).

    Rows with a true ``estimated`` field (sizes from the size model, not a written file) are drawn with hollow
    markers and dashed lines, their legend entry suffixed " (size model)". Returns ``png``.
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 4))
    for series, estimated in sorted({(r.get("series", "omni"), bool(r.get("estimated"))) for r in rows}):
        pts = sorted((r[x_key] * x_scale, r[wer_key]) for r in rows
                     if r.get("series", "omni") == series and bool(r.get("estimated")) == estimated
                     and r.get(wer_key) is not None)
        if not pts:
            continue
        if estimated:
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "o--", markerfacecolor="none",
                    label=f"{series} (size model)")
        else:
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "o-", label=series)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=120)
    plt.close(fig)
    fileio.write_bytes(png, image.getvalue())
    return png
