"""StreamingInferenceModule -> TFLite flatbuffer per quantization mode, builtin ops only.

Modes (``QUANT_MODES``):
- ``float32``: no optimization.
- ``float16``: fp16 weights (dequantized at load / by XNNPACK), float compute.
- ``dynamic_int8``: int8 weights, per-tensor/per-channel dynamic-range activations (hybrid kernels).
- ``int8``: integer activations and weights, calibrated with a representative dataset: tuples
  ``(signature_key, {input: value})`` drawn from the real streaming loop over dev features, so caches and
  predictor states are representative (``parity.collect_representative``). Float inputs/outputs are kept at
  the interface. Three steps of our own around TFLite's quantizer (see ``quantize_int8``):
  1. calibrate (the converter's calibrate-only mode), 2. re-measure every activation range by running the
  calibrated float model in LiteRT with all tensors preserved (TF 2.21's calibrator records the range of a
  tensor consumed by an in-place ADD as the ADD's range: every residual-branch output got the ~7x wider
  residual-stream range), 3. quantize with the op groups in ``INT8_FLOAT_GROUPS`` kept float (selective
  quantization, as ``tf.lite.experimental.QuantizationDebugger`` does, whose debug run covers one signature
  only). Every matmul, depthwise conv, gating and the residual stream run int8; LayerNorm, the masked
  softmax, the LSTM cell state and the output log-softmax stay float, because int8 per-tensor scales lose
  them: LayerNorm's rsqrt spans 0.08..17 across frames, the LSTM cell state and log-probs saturate.

Every file is checked by ``check_builtin_only`` (flatbuffer operator codes; a CUSTOM code, e.g. a Flex op,
fails the export). ``EXPERIMENTAL_SPARSITY`` is tried for every mode. A sparse-encoded file must compute
what the dense file computes on random inputs, both run with the same delegate setting
(``max_relative_diff``). ``sparse="auto"`` keeps it when it is smaller and agrees with default delegates
(XNNPACK) on; ``sparse="always"`` also accepts one that agrees only with default delegates off and records
``use_default_delegates: False``. Measured with ai-edge-litert 2.3.0 (docs/EXPORT.md, "Sparse encoding"):
float32 1x4-block files agree and run on XNNPACK (smaller and faster); float16 sparse files output NaN;
int8 / dynamic-int8 sparse files either fail to load with XNNPACK or, when they load, compute wrong values
(relative diff 1.59); with default delegates off they usually equal the dense file (3-5x slower there).
"""
from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import flatbuffers
import numpy as np
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema
from tensorflow.lite.python import convert as tflite_internal  # mlir_quantize / mlir_sparsify (TF 2.21)

import omni_tf  # noqa: F401

QUANT_MODES = ("float32", "float16", "dynamic_int8", "int8")
# Op groups that int8 mode can keep float, by the TF name scope of their ops (first name of a fused op):
INT8_FLOAT_GROUPS = {
    "layer_norm": r"^[\w/]*norm(_\d+)?/",                    # keras LayerNormalization (moments, rsqrt)
    "softmax": r"^[\w/]*masked_softmax(_\d+)?/",             # omni_tf.layers.attention.masked_softmax
    "lstm_cell": r"^[\w/]*lstm_cell(_\d+)?/",                # omni_tf.layers.predictor.lstm_gates
    "log_softmax": r"^[\w/]*output_log_softmax(_\d+)?/",     # Transducer.join_step
    "residual": r"^[\w/]*residual(_\d+)?/",                  # transformer residual adds
    "attention_scores": r"^[\w/]*attention_scores(_\d+)?/",  # q.k^T batch matmul
    "joint_activation": r"^[\w/]*joint_activation(_\d+)?/",  # joiner tanh
}
INT8_KEEP_FLOAT = ("layer_norm", "softmax", "lstm_cell", "log_softmax")  # measured: docs/EXPORT.md
SIGNATURES = ("encode", "predict", "join")
_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


class NonBuiltinOpError(ValueError):
    """The flatbuffer uses custom/Flex ops (not loadable by a stock LiteRT runtime)."""


@dataclasses.dataclass
class ConversionResult:
    content: bytes
    mode: str
    sparse_encoded: bool
    op_counts: dict[str, int]
    dense_bytes: int
    sparse_bytes: int | None
    interpreter_options: dict[str, Any]
    notes: list[str]
    int8: dict[str, Any] | None = None  # int8 mode: float-kept groups / op count, re-measured ranges


# ---------------------------------------------------------------------------------------------------------
# Flatbuffer inspection


def read_model(content: bytes) -> schema.ModelT:
    return schema.ModelT.InitFromPackedBuf(bytearray(content), 0)


def op_counts(content: bytes) -> dict[str, int]:
    """{op name: count} over all subgraphs; custom ops appear as ``CUSTOM:<code>``."""
    model = read_model(content)
    names = []
    for code in model.operatorCodes or []:
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
            names.append(f"CUSTOM:{custom}")
        else:
            names.append(_OP_NAMES.get(builtin, f"BUILTIN_{builtin}"))
    counts: dict[str, int] = {}
    for sub in model.subgraphs or []:
        for op in sub.operators or []:
            counts[names[op.opcodeIndex]] = counts.get(names[op.opcodeIndex], 0) + 1
    return counts


def check_builtin_only(content: bytes, label: str = "model") -> dict[str, int]:
    """Op counts if every operator is a TFLite builtin; raises NonBuiltinOpError naming the offenders."""
    counts = op_counts(content)
    bad = sorted(k for k in counts if k.startswith("CUSTOM:"))
    if bad:
        raise NonBuiltinOpError(f"{label}: non-builtin ops {bad} (Flex/custom ops are not allowed)")
    return counts


def constant_buffers(content: bytes) -> dict[str, tuple[np.ndarray, tuple[int, ...], bool]]:
    """{tensor name: (raw buffer as float32/int8/... array, tensor shape, is_sparse)} for constant tensors."""
    model = read_model(content)
    dtypes = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16,
              schema.TensorType.INT8: np.int8, schema.TensorType.INT32: np.int32}
    out = {}
    for sub in model.subgraphs or []:
        for t in sub.tensors or []:
            buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
            data = None if buf is None else buf.data
            if data is None and buf is not None and buf.offset > 1:
                data = np.frombuffer(content, np.uint8, count=int(buf.size), offset=int(buf.offset))
            if data is None or t.type not in dtypes:
                continue
            name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
            arr = np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtypes[t.type])
            out[name] = (arr, tuple(int(d) for d in (t.shape if t.shape is not None else [])),
                         t.sparsity is not None)
    return out


# ---------------------------------------------------------------------------------------------------------
# Conversion


def _converter(module, saved_dir: str) -> tf.lite.TFLiteConverter:
    tf.saved_model.save(module, saved_dir, signatures=module.signatures())
    conv = tf.lite.TFLiteConverter.from_saved_model(saved_dir, signature_keys=list(SIGNATURES))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    conv.allow_custom_ops = False
    return conv


def _configure(conv: tf.lite.TFLiteConverter, mode: str, sparse: bool,
               representative: Callable[[], Iterable[tuple[str, dict[str, np.ndarray]]]] | None) -> None:
    opts = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else []
    if mode == "float16":
        opts.append(tf.lite.Optimize.DEFAULT)
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic_int8":
        opts.append(tf.lite.Optimize.DEFAULT)
    elif mode == "int8":
        if representative is None:
            raise ValueError("mode int8 needs a representative dataset (signature_key, inputs) generator")
        opts.append(tf.lite.Optimize.DEFAULT)
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    elif mode != "float32":
        raise ValueError(f"unknown quantization mode {mode!r}; choose one of {QUANT_MODES}")
    conv.optimizations = opts


def write_model(model: schema.ModelT) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def measure_activation_ranges(content: bytes, samples: Iterable[tuple[str, dict[str, np.ndarray]]]
                              ) -> dict[tuple[int, int], tuple[float, float]]:
    """{(subgraph, tensor index): (min, max)} of every float tensor over ``(signature, feeds)`` samples.

    Runs ``content`` in LiteRT without delegates and with every intermediate tensor preserved, so a tensor
    keeps its own values even when a later op works in place.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: PLC0415

    interp = Interpreter(model_content=content, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    runners = {key: interp.get_signature_runner(key) for key in interp.get_signature_list()}
    float_tensors = {key: [d["index"] for d in interp.get_tensor_details(r._subgraph_index)
                           if d["dtype"] == np.float32] for key, r in runners.items()}
    ranges: dict[tuple[int, int], tuple[float, float]] = {}
    for key, feeds in samples:
        runner = runners[key]
        runner(**feeds)
        sub = runner._subgraph_index
        for index in float_tensors[key]:
            try:
                value = interp.get_tensor(index, sub)
            except ValueError:  # a tensor without data (e.g. an optional input)
                continue
            if value.size:
                lo, hi = ranges.get((sub, index), (np.inf, -np.inf))
                ranges[(sub, index)] = (min(lo, float(value.min())), max(hi, float(value.max())))
    return ranges


def recalibrate(calibrated: bytes, samples: Iterable[tuple[str, dict[str, np.ndarray]]]
                ) -> tuple[bytes, int]:
    """The calibrated model with every recorded activation range replaced by the measured one.

    Returns (model, number of tensors whose range changed by more than 1e-4 relative).
    """
    ranges = measure_activation_ranges(calibrated, samples)
    model = read_model(calibrated)
    changed = 0
    for sub_index, sub in enumerate(model.subgraphs or []):
        for index, tensor in enumerate(sub.tensors or []):
            q = tensor.quantization
            if q is None or q.min is None or q.max is None or (sub_index, index) not in ranges:
                continue
            lo, hi = ranges[(sub_index, index)]
            width = max(abs(float(q.max[0]) - float(q.min[0])), 1e-12)
            if abs(float(q.min[0]) - lo) > 1e-4 * width or abs(float(q.max[0]) - hi) > 1e-4 * width:
                changed += 1
            q.min, q.max = [lo], [hi]
    return write_model(model), changed


def float_kept_nodes(content: bytes, groups: Sequence[str]) -> list[str]:
    """Output tensor names of the ops in ``groups`` (keys of ``INT8_FLOAT_GROUPS``), all subgraphs."""
    unknown = sorted(set(groups) - set(INT8_FLOAT_GROUPS))
    if unknown:
        raise ValueError(f"unknown int8 float groups {unknown}; choose from {sorted(INT8_FLOAT_GROUPS)}")
    if not groups:
        return []
    pattern = re.compile("|".join(INT8_FLOAT_GROUPS[g] for g in groups))
    model = read_model(content)
    names = set()
    for sub in model.subgraphs or []:
        for op in sub.operators or []:
            for out in op.outputs:
                name = sub.tensors[out].name
                name = name.decode() if isinstance(name, bytes) else str(name)
                if pattern.search(name.split(";")[0]):
                    names.add(name)
    return sorted(names)


def quantize_int8(conv: tf.lite.TFLiteConverter, samples: Sequence[tuple[str, dict[str, np.ndarray]]],
                  keep_float: Sequence[str] = INT8_KEEP_FLOAT) -> tuple[bytes, dict[str, Any]]:
    """Calibrate -> re-measure ranges -> quantize with ``keep_float`` groups float (module docstring).

    ``conv`` is a converter configured for int8 (``_configure``). Returns (model bytes, details).
    """
    conv._experimental_calibrate_only = True  # the documented QuantizationDebugger route
    calibrated = conv.convert()
    fixed, changed = recalibrate(calibrated, samples)
    nodes = float_kept_nodes(fixed, keep_float)
    content = tflite_internal.mlir_quantize(fixed, denylisted_nodes=nodes or None)
    return content, {"keep_float": list(keep_float), "float_ops": len(nodes), "ranges_remeasured": changed}


def convert_module(module, mode: str, representative=None, sparse: str = "auto",
                   workdir: str | None = None,
                   int8_keep_float: Sequence[str] = INT8_KEEP_FLOAT) -> ConversionResult:
    """Converts the three signatures; ``sparse`` in {"auto", "never", "always"}.

    "auto" keeps the sparse-encoded file only when it is smaller and loads + runs with default delegates;
    "always" keeps it if it loads at all (recording ``use_default_delegates: False`` when needed).
    ``int8_keep_float``: op groups (``INT8_FLOAT_GROUPS``) that mode int8 keeps float; () = all int8.
    """
    if sparse not in ("auto", "never", "always"):
        raise ValueError(f"sparse must be auto|never|always, got {sparse!r}")
    if mode not in QUANT_MODES:
        raise ValueError(f"unknown quantization mode {mode!r}; choose one of {QUANT_MODES}")
    if mode == "int8" and representative is None:
        raise ValueError("mode int8 needs a representative dataset (signature_key, inputs) generator")
    notes: list[str] = []
    int8_details = None
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        saved = os.path.join(tmp, "saved_model")
        conv = _converter(module, saved)
        _configure(conv, mode, False, representative)
        if mode == "int8":
            dense, int8_details = quantize_int8(conv, list(representative()), int8_keep_float)
            kept = ", ".join(int8_keep_float) or "none"
            notes.append(f"int8: {int8_details['ranges_remeasured']} activation ranges re-measured; "
                         f"{int8_details['float_ops']} ops kept float ({kept})")
        else:
            dense = conv.convert()
        check_builtin_only(dense, f"{mode} dense")
        sparse_content = None
        if sparse != "never" and mode == "int8":
            sparse_content = tflite_internal.mlir_sparsify(dense)  # what the converter does after quantizing
        elif sparse != "never":
            conv = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=list(SIGNATURES))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            _configure(conv, mode, True, representative)
            sparse_content = conv.convert()
        if sparse_content is not None:
            check_builtin_only(sparse_content, f"{mode} sparse")
    options: dict[str, Any] = {"use_default_delegates": True}
    chosen, is_sparse = dense, False
    if sparse_content is not None:
        smaller = len(sparse_content) < len(dense)
        agrees = {True: _sparse_agrees(dense, sparse_content, True, mode, notes)}
        # without delegates only matters when XNNPACK failed (for --sparse=always, and the note)
        agrees[False] = not agrees[True] and _sparse_agrees(dense, sparse_content, False, mode, notes)
        if agrees[True] and (smaller or sparse == "always"):
            chosen, is_sparse = sparse_content, True
        elif agrees[False] and sparse == "always":
            chosen, is_sparse = sparse_content, True
            options["use_default_delegates"] = False
            notes.append("sparse file needs default delegates (XNNPACK) off")
        else:
            why = ("not smaller" if agrees[True] else
                   f"agrees with dense with default delegates: False, without: {agrees[False]}"
                   + ("" if sparse == "always" else " (--sparse=always accepts delegates off)"))
            notes.append(f"sparse encoding not used: {len(sparse_content)} B vs dense {len(dense)} B; {why}")
    return ConversionResult(chosen, mode, is_sparse, check_builtin_only(chosen, mode), len(dense),
                            None if sparse_content is None else len(sparse_content), options, notes,
                            int8_details)


def _sparse_agrees(dense: bytes, sparse: bytes, default_delegates: bool, mode: str, notes: list[str]) -> bool:
    """True if ``sparse`` loads, runs and matches ``dense`` (same delegate setting); notes say why not."""
    where = "with" if default_delegates else "without"
    if not smoke_run(sparse, default_delegates=default_delegates):
        notes.append(f"sparse-encoded {mode} file does not load/run {where} default delegates")
        return False
    diff = max_relative_diff(dense, sparse, default_delegates=default_delegates)
    if diff > SPARSE_RTOL:
        notes.append(f"sparse-encoded {mode} file disagrees with the dense one {where} default delegates "
                     f"(max relative diff {diff:.3g} > {SPARSE_RTOL})")
        return False
    return True


def make_interpreter(content: bytes, num_threads: int = 1, default_delegates: bool = True):
    """A LiteRT Interpreter over ``content`` (tensors allocated)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: PLC0415

    resolver = (OpResolverType.AUTO if default_delegates
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp = Interpreter(model_content=content, num_threads=num_threads,
                         experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    return interp


SPARSE_RTOL = 0.02  # max |sparse - dense| / max(1, max |dense|) per output, on random inputs


def _random_feeds(runner, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for name, d in runner.get_input_details().items():
        if np.issubdtype(d["dtype"], np.integer):
            feeds[name] = np.ones(d["shape"], d["dtype"])  # token 1: a real, non-blank piece
        else:
            feeds[name] = rng.standard_normal(d["shape"]).astype(d["dtype"])
    return feeds


def max_relative_diff(reference: bytes, candidate: bytes, default_delegates: bool = True,
                      seed: int = 0) -> float:
    """Max over signatures and outputs of ``max|cand - ref| / max(1, max|ref|)`` on the same random inputs.

    Both files run with the same delegate setting: XNNPACK's int8 kernels round differently from the
    builtin ones (dense full-int8 file, XNNPACK vs builtin: up to 0.08 relative on the demo model), which
    is not a difference between the files.
    """
    ref_i = make_interpreter(reference, default_delegates=default_delegates)
    cand_i = make_interpreter(candidate, default_delegates=default_delegates)
    worst = 0.0
    for key in ref_i.get_signature_list():
        ref_r, cand_r = ref_i.get_signature_runner(key), cand_i.get_signature_runner(key)
        feeds = _random_feeds(ref_r, np.random.default_rng(seed))
        ref_out, cand_out = ref_r(**feeds), cand_r(**feeds)
        for name, value in ref_out.items():
            if not np.all(np.isfinite(cand_out[name])):
                return float("inf")  # NaN/Inf where the reference is finite (LiteRT's sparse float16 files)
            scale = max(1.0, float(np.abs(value).max()))
            worst = max(worst, float(np.abs(cand_out[name] - value).max()) / scale)
    return worst


def smoke_run(content: bytes, default_delegates: bool = True) -> bool:
    """True if every signature loads and runs on zeros (token 0) in LiteRT."""
    try:
        interp = make_interpreter(content, default_delegates=default_delegates)
        for key in interp.get_signature_list():
            runner = interp.get_signature_runner(key)
            feeds = {name: np.zeros(d["shape"], d["dtype"]) for name, d in runner.get_input_details().items()}
            runner(**feeds)
        return True
    except (RuntimeError, ValueError):  # LiteRT reports load/prepare/invoke failures as these
        return False
