"""StreamingInferenceModule -> TFLite flatbuffer per quantization mode, builtin ops only.

Modes (``QUANT_MODES``). The TF converter makes the float32 file (and float16); every other mode is that
float32 file quantized by ai-edge-quantizer (AEQ) with a recipe (``quantization_recipe``), no private
TF/LiteRT quantization API:
- ``float32``: no optimization.
- ``float16``: fp16 weights (converter; dequantized at load / by XNNPACK), float compute.
- ``dynamic_int8``: int8 per-channel weights, activations quantized at run time (hybrid kernels).
- ``weight_only_int8``: int8 per-channel weights with DEQUANTIZE ops in front: float compute, smaller file.
- ``dynamic_int4``: int4 per-channel FULLY_CONNECTED weights (XNNPACK's int4 path), int8 depthwise conv.
- ``int8``: integer activations (per tensor) and weights (per channel), calibrated with ``(signature_key,
  {input: value})`` samples from the real streaming loop over dev features, so caches and predictor states
  are representative (``parity.collect_representative``). Float inputs/outputs at the interface. The op
  groups of ``INT8_KEEP_FLOAT`` (by TF name scope, ``INT8_FLOAT_GROUPS``) stay float by a ``no_quantize``
  rule in the recipe: LayerNorm, the masked softmax, the LSTM cell state and the output log-softmax, because
  int8 per-tensor scales lose them (LayerNorm's rsqrt spans 0.08..17 across frames, the LSTM cell state and
  log-probs saturate). Calibration (``calibrate``) records each tensor's own min/max over all samples.

Every file is checked by ``check_builtin_only`` (flatbuffer operator codes; a CUSTOM code, e.g. a Flex op,
fails the export). Sparse encoding is tried for every mode but ``dynamic_int4`` (the converter's
``EXPERIMENTAL_SPARSITY``; for quantized files the sparsifier the converter runs after quantizing, a
non-public TF function, aborts the process on int4 weights). A sparse-encoded file must compute
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
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema
from ai_edge_quantizer import calibrator, quantizer, recipe_manager
from ai_edge_quantizer import recipe as aeq_recipe
from ai_edge_quantizer.qtyping import TFLOperationName
from ai_edge_quantizer.utils import qsv_utils
from tensorflow.lite.python import convert as tflite_internal  # mlir_sparsify (TF 2.21; no public API)

import omni_tf  # noqa: F401

QUANT_MODES = ("float32", "float16", "dynamic_int8", "weight_only_int8", "dynamic_int4", "int8")
AEQ_MODES = ("dynamic_int8", "weight_only_int8", "dynamic_int4", "int8")  # quantized by ai-edge-quantizer
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
# Ops that a group also takes by type: the join's LOG_SOFTMAX output is the signature output, which the
# converter names after the signature (``StatefulPartitionedCall_1:0``), not after its TF name scope.
INT8_FLOAT_GROUP_OPS = {"log_softmax": "LOG_SOFTMAX"}
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
    quantizer: dict[str, Any] | None = None  # AEQ_MODES: recipe; int8: kept float groups, calibration


# ---------------------------------------------------------------------------------------------------------
# Flatbuffer inspection


def read_model(content: bytes) -> schema.ModelT:
    return schema.ModelT.InitFromPackedBuf(bytearray(content), 0)


def _op_names(model: schema.ModelT) -> list[str]:
    """Operator name per operator-code index; custom ops as ``CUSTOM:<code>``."""
    names = []
    for code in model.operatorCodes or []:
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
            names.append(f"CUSTOM:{custom}")
        else:
            names.append(_OP_NAMES.get(builtin, f"BUILTIN_{builtin}"))
    return names


def op_counts(content: bytes) -> dict[str, int]:
    """{op name: count} over all subgraphs; custom ops appear as ``CUSTOM:<code>``."""
    model = read_model(content)
    names = _op_names(model)
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


def signature_inputs(content: bytes) -> dict[str, list[tuple[str, tuple[int, ...], str]]]:
    """{signature: [(input name, shape, dtype name e.g. "INT32")]} in the order of the signature subgraph's
    inputs (the order LiteRT's ``benchmark_model`` matches ``--input_layer`` entries to, by position)."""
    model = read_model(content)
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    out = {}
    for sig in model.signatureDefs or []:
        sub = model.subgraphs[sig.subgraphIndex]
        names = {int(t.tensorIndex): t.name.decode() if isinstance(t.name, bytes) else str(t.name)
                 for t in sig.inputs}
        key = sig.signatureKey.decode() if isinstance(sig.signatureKey, bytes) else str(sig.signatureKey)
        out[key] = [(names[int(i)], tuple(int(d) for d in sub.tensors[i].shape), types[sub.tensors[i].type])
                    for i in sub.inputs]
    return out


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


def _configure(conv: tf.lite.TFLiteConverter, mode: str, sparse: bool) -> None:
    """Converter options for ``float32`` (also the input of ``AEQ_MODES``) or ``float16``."""
    opts = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else []
    if mode == "float16":
        opts.append(tf.lite.Optimize.DEFAULT)
        conv.target_spec.supported_types = [tf.float16]
    elif mode != "float32":
        raise ValueError(f"the converter makes float32 / float16 files only, not {mode!r}")
    conv.optimizations = opts


def quantization_recipe(mode: str, keep_float: Sequence[str] = INT8_KEEP_FLOAT) -> list[dict[str, Any]]:
    """The ai-edge-quantizer recipe (a JSON-able list of rules; later rules win) for one of ``AEQ_MODES``.

    - ``dynamic_int8``: int8 per-channel weights of every supported op, activations quantized at run time.
    - ``weight_only_int8``: int8 per-channel weights dequantized to float before each op (float compute).
    - ``dynamic_int4``: int4 per-channel FULLY_CONNECTED weights (the op XNNPACK runs with int4 weights),
      int8 for the other weighted ops (depthwise conv).
    - ``int8``: int8 activations (per tensor) and weights (per channel); the ops whose scope (op output
      tensor names) matches a ``keep_float`` group of ``INT8_FLOAT_GROUPS`` (or whose type is the group's
      ``INT8_FLOAT_GROUP_OPS`` entry) are not quantized, and the
      signature inputs/outputs stay float.
    Raises ValueError for another mode or an unknown group name.
    """
    unknown = sorted(set(keep_float) - set(INT8_FLOAT_GROUPS))
    if unknown:
        raise ValueError(f"unknown int8 float groups {unknown}; choose from {sorted(INT8_FLOAT_GROUPS)}")
    if mode == "dynamic_int8":
        rules = aeq_recipe.dynamic_wi8_afp32()
    elif mode == "weight_only_int8":
        rules = aeq_recipe.weight_only_wi8_afp32()
    elif mode == "dynamic_int4":
        rules = (aeq_recipe.dynamic_wi8_afp32()
                 + aeq_recipe.dynamic_wi4c_afp32(operation_name=TFLOperationName.FULLY_CONNECTED))
    elif mode == "int8":
        rules = aeq_recipe.static_wi8_ai8()
        rules += [{"regex": INT8_FLOAT_GROUPS[g], "operation": "*", "algorithm_key": "no_quantize"}
                  for g in keep_float]
        rules += [{"regex": ".*", "operation": INT8_FLOAT_GROUP_OPS[g], "algorithm_key": "no_quantize"}
                  for g in keep_float if g in INT8_FLOAT_GROUP_OPS]
        rules += [{"regex": ".*", "operation": io, "algorithm_key": "no_quantize"}
                  for io in ("INPUT", "OUTPUT")]
    else:
        raise ValueError(f"mode {mode!r} is not an ai-edge-quantizer mode {AEQ_MODES}")
    return json.loads(json.dumps(rules, default=str))  # enums -> their string values


def calibrate(float_content: bytes, rules: list[dict[str, Any]],
              samples: Iterable[tuple[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """{tensor name: {"min", "max"}} over ``(signature, feeds)`` samples: ai-edge-quantizer's calibrator.

    Every tensor's own range (the library runs LiteRT with all tensors preserved, so a tensor consumed by an
    in-place ADD keeps its own values; TF 2.21's converter calibrator recorded the ADD's range there), and
    the running min / max over all samples (``min_max_update``) instead of the library's default moving
    average of per-sample ranges (smoothing 0.95), which narrows the range of tensors that change over a
    stream, e.g. the caches that start at zeros (docs/EXPORT.md).
    """
    by_signature: dict[str, list[dict[str, np.ndarray]]] = {}
    for key, feeds in samples:
        by_signature.setdefault(key, []).append(feeds)
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(rules)
    cal = calibrator.Calibrator(float_content, num_threads=1, qsv_update_func=qsv_utils.min_max_update)
    cal.calibrate(by_signature, manager)
    return cal.get_model_qsvs()


def quantize(float_content: bytes, mode: str,
             samples: Sequence[tuple[str, dict[str, np.ndarray]]] | None = None,
             keep_float: Sequence[str] = INT8_KEEP_FLOAT) -> tuple[bytes, dict[str, Any]]:
    """The float32 file quantized by ai-edge-quantizer in ``mode`` -> (model bytes, details).

    ``samples`` (mode int8 only, required there): calibration ``(signature, feeds)`` pairs from the float
    streaming loop (``parity.collect_representative``). ``details``: the recipe, and for int8 the kept
    float groups with the number of their ops that are float in the file (``float_group_ops``).
    """
    rules = quantization_recipe(mode, keep_float)
    qsvs = None
    if mode == "int8":
        if not samples:
            raise ValueError("mode int8 needs calibration samples (signature_key, inputs)")
        qsvs = calibrate(float_content, rules, samples)
    result = quantizer.Quantizer(float_content, rules).quantize(qsvs, enable_progress_report=False)
    content = bytes(result.quantized_model)
    details: dict[str, Any] = {"library": "ai-edge-quantizer", "recipe": rules}
    if mode == "int8":
        float_ops = float_group_ops(content, keep_float)
        details.update(keep_float=list(keep_float), float_ops=sum(f for f, _ in float_ops.values()),
                       calibration_samples=len(samples), calibration_update="min_max")
    return content, details


def float_group_ops(content: bytes, groups: Sequence[str]) -> dict[str, tuple[int, int]]:
    """{group: (ops with float outputs, ops)} over the ops of ``content`` matched by ``INT8_FLOAT_GROUPS``.

    An op belongs to a group if the first name of its first output matches the group's scope pattern or its
    type is the group's ``INT8_FLOAT_GROUP_OPS`` entry; QUANTIZE / DEQUANTIZE ops the quantizer inserted
    at a group's border are not counted.
    """
    model = read_model(content)
    codes = _op_names(model)
    out = {g: (0, 0) for g in groups}
    for sub in model.subgraphs or []:
        for op in sub.operators or []:
            if codes[op.opcodeIndex] in ("QUANTIZE", "DEQUANTIZE") or not len(op.outputs):
                continue
            tensor = sub.tensors[op.outputs[0]]
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
            for g in groups:
                if (re.search(INT8_FLOAT_GROUPS[g], name.split(";")[0])
                        or codes[op.opcodeIndex] == INT8_FLOAT_GROUP_OPS.get(g)):
                    kept, total = out[g]
                    out[g] = (kept + (tensor.type == schema.TensorType.FLOAT32), total + 1)
    return out


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
    details = None
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        saved = os.path.join(tmp, "saved_model")
        conv = _converter(module, saved)
        _configure(conv, "float16" if mode == "float16" else "float32", False)
        dense = conv.convert()
        if mode in AEQ_MODES:
            samples = list(representative()) if mode == "int8" else None
            dense, details = quantize(dense, mode, samples, int8_keep_float)
            if mode == "int8":
                notes.append(f"int8 (ai-edge-quantizer): {details['float_ops']} ops kept float "
                             f"({', '.join(int8_keep_float) or 'none'})")
        check_builtin_only(dense, f"{mode} dense")
        sparse_content = None
        if sparse != "never" and mode == "dynamic_int4":
            notes.append("sparse encoding not tried: TF 2.21's sparsifier aborts the process on int4 weights")
        elif sparse != "never" and mode in AEQ_MODES:
            sparse_content = tflite_internal.mlir_sparsify(dense)  # what the converter does after quantizing
        elif sparse != "never":
            conv = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=list(SIGNATURES))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            _configure(conv, mode, True)
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
                            details)


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
