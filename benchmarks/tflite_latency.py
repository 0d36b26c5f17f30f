"""LiteRT latency per tier on this CPU: per-signature median, streaming RTF (1 thread), memory, GFLOP/s.

Usage (from the repository root):
  python -m benchmarks.tflite_latency --export_dir=WORK/tflite            # every tier of an export
  python -m benchmarks.tflite_latency --preset=tiny --seconds=10 --utterances=3   # fresh tiny model tiers

Without ``--export_dir`` a freshly initialized model of ``--preset`` is exported in-process as (``--only``
selects a subset): dense float32, float16, dynamic-range int8, full int8 (calibrated on the streaming
loop over the benchmark's own features, ``parity.collect_representative``), weight-only int8 and dynamic
int4, then at 80% sparsity float32 and float16 with 1x4 blocks and dynamic int8 with 1x16 blocks (sparse
encoding tried; ``convert.py`` keeps it only if smaller, loadable with default delegates and agreeing with
the dense file). Its joiner blank logit is
raised by ``--blank_bias`` so that the untrained model emits a speech-like token rate (reported as
tokens/s) instead of up to 4 symbols per frame; parity is not checked.

Inputs are random CMVN-like features (N(0,1)); latency does not depend on their values except through the
number of emitted tokens. ``peak_mem_mb``: peak RSS of a fresh process that loads the model and runs each
signature once, minus that of the same process without the model. Per-signature medians are Python
``SignatureRunner`` calls (each includes ~10-30 us of Python/binding overhead). The encoder step's achieved
GFLOP/s (dense FLOPs of the encode signature, counted from the flatbuffer) is compared with this CPU's
single-core float32 matmul rate, measured in the same run by a TFLite FULLY_CONNECTED microbenchmark
(XNNPACK, 1 thread, [64, 1024] x [1024, 1024]). ``encode_ops``: operators in the encode subgraph. The header
also times a float32 graph of only the first tier's encode FULLY_CONNECTED ops (same shapes): the rate the
encoder step's matmuls reach at its few rows per call, i.e. roughly the ceiling of ``encode_vs_peak`` if every
other op were free.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

import omni_tf  # noqa: F401
from omni_tf import fileio
from omni_tf.configs import model as model_configs
from omni_tf.model import build_model
from tflite_export import bundle, convert, inference_model, parity
from tflite_export.recognizer import LiteRTRecognizer

FLAGS = flags.FLAGS
flags.DEFINE_string("export_dir", "", "Export directory with <tier>/model.tflite + manifest.json.")
flags.DEFINE_string("preset", "tiny", "Model preset for the fresh model (without --export_dir).")
flags.DEFINE_float("seconds", 10.0, "Length of each random utterance.")
flags.DEFINE_integer("utterances", 3, "Utterances for the streaming RTF.")
flags.DEFINE_integer("runs", 200, "Calls per signature for the medians.")
flags.DEFINE_float("blank_bias", 2.7, "Added to the fresh model's blank logit (realistic token rate).")
flags.DEFINE_string("output", "", "Also write the Markdown table here.")
flags.DEFINE_list("only", [], "Names of the fresh-model TIER_SPECS to run (default: all).")

# (name, quantization, tier (None = dense, 1 = level 0.8), block, sparse)
TIER_SPECS = (("f32_dense", "float32", None, 1, "never"), ("f16_dense", "float16", None, 1, "never"),
              ("int8dyn_dense", "dynamic_int8", None, 1, "never"), ("int8_dense", "int8", None, 1, "never"),
              ("int8wo_dense", "weight_only_int8", None, 1, "never"),
              ("int4dyn_dense", "dynamic_int4", None, 1, "never"),
              ("f32_s80_1x4", "float32", 1, "1x4", "auto"), ("f16_s80_1x4", "float16", 1, "1x4", "auto"),
              ("int8dyn_s80_1x16", "dynamic_int8", 1, "1x16", "auto"),
              # --sparse=always: the 1x16 int8 files that are right only with XNNPACK off (size vs speed)
              ("int8dyn_s80_1x16_always", "dynamic_int8", 1, "1x16", "always"),
              ("int8_s80_1x16_always", "int8", 1, "1x16", "always"))


def encode_op_count(content: bytes) -> int:
    """Operators in the ``encode`` signature's subgraph."""
    return len(_encode_subgraph(content)[1].operators)


def _encode_subgraph(content: bytes):
    """({operator code index: builtin op}, the ``encode`` signature's subgraph)."""
    model = convert.read_model(content)
    codes = {i: max(int(c.builtinCode), int(c.deprecatedBuiltinCode))
             for i, c in enumerate(model.operatorCodes)}
    sig = next(s for s in model.signatureDefs if s.signatureKey.decode() == "encode")
    return codes, model.subgraphs[sig.subgraphIndex]


def encode_fc_shapes(content: bytes) -> list[tuple[int, int, int]]:
    """``(rows, in, out)`` of every FULLY_CONNECTED op of the ``encode`` signature."""
    codes, sub = _encode_subgraph(content)
    shapes = []
    for op in sub.operators:
        if codes[op.opcodeIndex] == convert.schema.BuiltinOperator.FULLY_CONNECTED:
            out_dim, in_dim = (int(d) for d in sub.tensors[op.inputs[1]].shape)
            shapes.append((int(np.prod(sub.tensors[op.inputs[0]].shape)) // in_dim, in_dim, out_dim))
    return shapes


def encode_flops(content: bytes) -> float:
    """Dense FLOPs of one ``encode`` call: 2*M*N*K over FULLY_CONNECTED and BATCH_MATMUL ops."""
    codes, sub = _encode_subgraph(content)
    flops = sum(2.0 * rows * k * n for rows, k, n in encode_fc_shapes(content))
    for op in sub.operators:
        if codes[op.opcodeIndex] == convert.schema.BuiltinOperator.BATCH_MATMUL:
            out_shape = list(sub.tensors[op.outputs[0]].shape)
            a = list(sub.tensors[op.inputs[0]].shape)
            k = a[-1] if not (op.builtinOptions and op.builtinOptions.adjX) else a[-2]
            flops += 2.0 * float(np.prod(out_shape)) * k
    return flops


def _median_call_s(runner, feeds: dict[str, np.ndarray], runs: int) -> float:
    for _ in range(5):
        runner(**feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        runner(**feeds)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def fc_only_ms(shapes: list[tuple[int, int, int]], runs: int) -> float:
    """Median ms of a float32 LiteRT graph (XNNPACK, 1 thread) of only FULLY_CONNECTED ops of ``shapes``
    (random weights, no bias; each op reads the latest output of matching width): the time an ``encode``
    call would take if its matmuls were all it did."""
    rng = np.random.default_rng(0)
    weights = [tf.constant(rng.normal(size=[k, n]).astype(np.float32) * 0.05) for _, k, n in shapes]
    dims = sorted({k for _, k, _ in shapes})

    class Fc(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([shapes[0][0], d], tf.float32) for d in dims])
        def f(self, *xs):
            latest, outs = dict(zip(dims, xs, strict=True)), {}
            for i, ((_, k, _), w) in enumerate(zip(shapes, weights, strict=True)):
                latest[w.shape[1]] = outs[f"y{i}"] = tf.matmul(latest[k], w)
            return outs

    mod = Fc()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([mod.f.get_concrete_function()], mod)
    runner = convert.make_interpreter(conv.convert(), num_threads=1).get_signature_runner()
    feeds = {name: rng.normal(size=d["shape"]).astype(np.float32)
             for name, d in runner.get_input_details().items()}
    return 1e3 * _median_call_s(runner, feeds, runs)


def matmul_peak_gflops(m: int = 64, k: int = 1024, n: int = 1024, runs: int = 50) -> float:
    """Single-thread float32 FULLY_CONNECTED rate in LiteRT (XNNPACK) on this CPU."""
    w = tf.constant(np.random.default_rng(0).normal(size=[k, n]).astype(np.float32))

    class Mm(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([m, k], tf.float32)])
        def f(self, x):
            return {"y": tf.matmul(x, w)}

    mod = Mm()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([mod.f.get_concrete_function()], mod)
    interp = convert.make_interpreter(conv.convert(), num_threads=1)
    runner = interp.get_signature_runner()
    x = np.random.default_rng(1).normal(size=[m, k]).astype(np.float32)
    return 2.0 * m * k * n / _median_call_s(runner, {"x": x}, runs) / 1e9


def fresh_tiers(out_dir: str, feats: list[np.ndarray]) -> list[tuple]:
    """Exports the benchmark tiers of a fresh ``--preset`` model (int8 calibrated on ``feats [T, 80]``);
    returns ``(tier_dir, layout, interpreter_options, prunable_sparsity, notes)`` per tier."""
    cfg = model_configs.get_preset(FLAGS.preset)
    model = build_model(cfg, seed=0)  # the same weights (and so the same 0.8-level masks) every run
    bias = model.joiner.output_dense.bias
    bias.assign(tf.tensor_scatter_nd_add(bias, [[0]], [FLAGS.blank_bias]))
    unknown = sorted(set(FLAGS.only) - {spec[0] for spec in TIER_SPECS})
    if unknown:
        raise ValueError(f"unknown --only {unknown}; choose from {[spec[0] for spec in TIER_SPECS]}")
    dirs = []
    for name, quant, tier, block, sparse in TIER_SPECS:
        if FLAGS.only and name not in FLAGS.only:
            continue
        module = inference_model.build_inference_module(model, cfg, tier, levels=(0.0, 0.8), block=block)
        representative = None
        if quant == "int8":
            representative = parity.representative_fn(parity.collect_representative(module, feats))
        result = convert.convert_module(module, quant, representative=representative, sparse=sparse)
        tier_dir = os.path.join(out_dir, name)
        os.makedirs(tier_dir)
        with open(os.path.join(tier_dir, "model.tflite"), "wb") as f:
            f.write(result.content)
        summary = inference_model.sparsity_summary(module.model)
        dirs.append((tier_dir, module.describe(), result.interpreter_options, summary["prunable_sparsity"],
                     result.notes))
    return dirs


_PEAK_SCRIPT = """
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
if sys.argv[1]:
    kind = OpResolverType.AUTO if sys.argv[2] == "1" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_path=sys.argv[1], num_threads=1, experimental_op_resolver_type=kind)
    it.allocate_tensors()
    for key in it.get_signature_list():
        r = it.get_signature_runner(key)
        r(**{n: np.zeros(d["shape"], d["dtype"]) for n, d in r.get_input_details().items()})
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0])
"""  # VmHWM (peak RSS, kB) is per address space; ru_maxrss would carry the parent's peak across exec


def peak_memory_mb(path: str, default_delegates: bool) -> float:
    """Peak RSS of a fresh process that loads the model and runs every signature once, minus the same
    process without the model (imports only)."""
    def run(model_path: str) -> int:
        flag = "1" if default_delegates else "0"
        out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, model_path, flag], check=True,
                             capture_output=True, text=True)
        return int(out.stdout.strip().splitlines()[-1])

    return (run(path) - run("")) / 1024.0


def bench_tier(path: str, layout, options, feats) -> dict:
    with open(path, "rb") as f:
        content = f.read()
    default = bool(options.get("use_default_delegates", True))
    lat = bundle.measure_latency(content, layout, feats, 1, FLAGS.runs, default)
    rec = LiteRTRecognizer(content, layout, default_delegates=default)
    tokens = sum(len(rec.transcribe_features(x)) for x in feats)
    flops = encode_flops(content)
    return {"bytes": len(content), "sparse_encoded": any(t.sparsity is not None
                                                         for g in convert.read_model(content).subgraphs
                                                         for t in g.tensors),
            "encode_ms": lat["median_ms"]["encode"], "predict_ms": lat["median_ms"]["predict"],
            "join_ms": lat["median_ms"]["join"], "rtf_1thread": lat["rtf"],
            "tokens_per_s": tokens / lat["audio_s"],
            "encode_gflops": flops / (lat["median_ms"]["encode"] / 1e3) / 1e9,
            "encode_ops": encode_op_count(content), "xnnpack": default,
            "peak_mem_mb": peak_memory_mb(path, default)}


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    frames = int(FLAGS.seconds * 100)
    feats = [rng.normal(size=[frames, 80]).astype(np.float32) for _ in range(FLAGS.utterances)]
    peak = matmul_peak_gflops()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if FLAGS.export_dir:
            items = [(os.path.join(FLAGS.export_dir, m["tier"]), m["signatures"], m["interpreter_options"],
                      m["sparsity"].get("prunable_sparsity"), m.get("conversion_notes", []))
                     for m in bundle.load_bundle(FLAGS.export_dir)]
        else:
            items = fresh_tiers(tmp, feats)
        fc_shapes = {}
        for tier_dir, layout, options, sparsity, _notes in items:
            row = {"tier": os.path.basename(tier_dir), "sparsity": sparsity}
            path = os.path.join(tier_dir, "model.tflite")
            row.update(bench_tier(path, layout, options, feats))
            with open(path, "rb") as f:
                fc_shapes[row["tier"]] = encode_fc_shapes(f.read())
            rows.append(row)
    peak = max(peak, matmul_peak_gflops())  # measured before and after the tiers; the larger (less contended)
    for row in rows:
        row["encode_vs_peak"] = row["encode_gflops"] / peak
    table = bundle.markdown_table(rows)
    header = (f"Single-core float32 FULLY_CONNECTED peak (LiteRT/XNNPACK, [64,1024]x[1024,1024]): "
              f"{peak:.1f} GFLOP/s. Audio: {FLAGS.utterances} x {FLAGS.seconds:.0f} s random features.\n")
    shapes = fc_shapes[rows[0]["tier"]]
    fc_ms = min(fc_only_ms(shapes, FLAGS.runs) for _ in range(2))
    fc_rate = sum(2.0 * r * k * n for r, k, n in shapes) / fc_ms / 1e6
    header += (f"The {len(shapes)} FULLY_CONNECTED ops of {rows[0]['tier']}'s encode alone (float32, same "
               f"shapes, {shapes[0][0]} rows each, no other op): {fc_ms:.4f} ms = {fc_rate:.1f} GFLOP/s = "
               f"{fc_rate / peak:.2f} of peak.\n\n")
    print(header + table)
    if FLAGS.output:
        fileio.write_text(FLAGS.output, header + table)


if __name__ == "__main__":
    app.run(main)
