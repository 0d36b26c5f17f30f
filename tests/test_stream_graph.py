"""The streaming layers' TFLite graphs: fused Q/K/V projection, one-op masked softmax, XNNPACK-friendly conv.

Each test converts one layer's ``stream`` (or ``masked_softmax``) to TFLite, checks the op structure the
latency work relies on (``docs/BENCHMARKS.md``, "TFLite latency per tier") and that LiteRT computes what
Keras computes.
"""

import re

import numpy as np
import pytest
import tensorflow as tf

import omni_tf  # noqa: F401
from omni_tf.layers.attention import ChunkedMultiHeadAttention, masked_softmax
from omni_tf.layers.transformer import CausalConvModule
from tflite_export import convert

D, H, C, L = 8, 2, 3, 2  # d_model, heads, chunk, left chunks


def _to_tflite(module: tf.Module) -> bytes:
    """``module.f`` (a tf.function with an input signature) as a float32 TFLite file."""
    conv = tf.lite.TFLiteConverter.from_concrete_functions([module.f.get_concrete_function()], module)
    return conv.convert()


def _ops(content: bytes) -> list[tuple[str, list[str], object]]:
    """(op name, output tensor names, builtin options) per operator of subgraph 0."""
    model = convert.read_model(content)
    names = [convert._OP_NAMES[max(int(c.builtinCode), int(c.deprecatedBuiltinCode))]
             for c in model.operatorCodes]
    sub = model.subgraphs[0]
    return [(names[op.opcodeIndex], [sub.tensors[i].name.decode() for i in op.outputs], op.builtinOptions)
            for op in sub.operators]


def _run(content: bytes, **feeds) -> dict[str, np.ndarray]:
    return convert.make_interpreter(content).get_signature_runner()(**feeds)


def _attention_with_masks_and_biases() -> ChunkedMultiHeadAttention:
    layer = ChunkedMultiHeadAttention(D, H, chunk_size=C, left_chunks=L)
    layer(tf.zeros([1, C, D]))
    rng = np.random.default_rng(0)
    for dense in (layer.query, layer.key, layer.value, layer.out):
        dense.kernel_mask.assign((rng.random([D, D]) > 0.4).astype(np.float32))
        dense.bias.assign(rng.normal(size=[D]).astype(np.float32))
    return layer


def test_masked_softmax_is_one_softmax_op_in_its_name_scope():
    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, H, C, 6]), tf.TensorSpec([1, 1, 1, 6])])
        def f(self, scores, allowed):
            return {"probs": masked_softmax(scores, allowed)}

    content = _to_tflite(M())
    ops = _ops(content)
    kinds = [k for k, _, _ in ops]
    assert kinds.count("SOFTMAX") == 1 and len(kinds) <= 4, kinds  # was 8 ops (exp, max, sum, div, ...)
    scope = re.compile(convert.INT8_FLOAT_GROUPS["softmax"])  # int8 export keeps these float by name
    assert all(scope.search(outs[0].split(";")[0]) for _, outs, _ in ops[:-1]), ops  # last: graph output
    rng = np.random.default_rng(1)
    scores = (rng.normal(size=[1, H, C, 6]) * 20 - 1e4).astype(np.float32)
    allowed = np.array([0, 1, 1, 0, 1, 1], np.float32).reshape([1, 1, 1, 6])
    got = _run(content, scores=scores, allowed=allowed)["probs"]
    np.testing.assert_allclose(got, masked_softmax(scores, allowed).numpy(), rtol=1e-5, atol=1e-7)
    assert np.all(got[..., allowed[0, 0, 0] == 0] == 0.0)


def test_fused_projection_equals_the_three_masked_dense_layers():
    layer = _attention_with_masks_and_biases()
    x = tf.random.normal([2, 5, D], seed=4)
    q, k, v = layer.project_qkv(x)
    scale = (D // H) ** -0.5
    np.testing.assert_allclose(q.numpy(), layer.query(x).numpy() * scale, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(k.numpy(), layer.key(x).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v.numpy(), layer.value(x).numpy(), rtol=1e-5, atol=1e-6)
    # the three MaskedDense layers (kernels, masks, biases: checkpoints, pruning) are unchanged
    names = [w.name for w in layer.weights]
    for part in ("query", "key", "value", "output"):
        for w in ("kernel", "kernel_mask", "bias"):
            assert sum(n.endswith(f"{part}/{w}:0") for n in names) == 1, (part, w, names)
    assert [n.split("/")[-1] for n, _ in layer.named_kernels("b")] == ["query", "key", "value", "output"]


def test_attention_stream_graph_has_one_fc_for_qkv_and_matches_keras():
    layer = _attention_with_masks_and_biases()
    n = L * C

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, C, D]), tf.TensorSpec([1, n, D]),
                                      tf.TensorSpec([1, n, D]), tf.TensorSpec([1, n])])
        def f(self, x, key, value, valid):
            y, s = layer.stream(x, {"key": key, "value": value, "valid": valid})
            return {"y": y, "key": s["key"], "value": s["value"], "valid": s["valid"]}

    module = M()
    module.layer = layer
    content = _to_tflite(module)
    ops = _ops(content)
    kinds = [k for k, _, _ in ops]
    assert kinds.count("FULLY_CONNECTED") == 2 and kinds.count("SOFTMAX") == 1, kinds  # qkv + output
    scores = re.compile(convert.INT8_FLOAT_GROUPS["attention_scores"])
    assert sum(k == "BATCH_MATMUL" and bool(scores.search(outs[0].split(";")[0])) for k, outs, _ in ops) == 1
    softmax = re.compile(convert.INT8_FLOAT_GROUPS["softmax"])
    assert all(softmax.search(outs[0].split(";")[0]) for k, outs, _ in ops if k == "SOFTMAX"), ops
    # the fused [3D, D] weight ([out, in]) is the masked kernels side by side, the query part scaled
    scale = (D // H) ** -0.5
    want = np.concatenate([layer.query.masked_kernel().numpy() * scale, layer.key.masked_kernel().numpy(),
                           layer.value.masked_kernel().numpy()], axis=1).T
    consts = [a.reshape(s) for a, s, _ in convert.constant_buffers(content).values()
              if tuple(s) == want.shape]
    assert any(np.allclose(a, want, rtol=1e-6, atol=1e-7) for a in consts)
    rng = np.random.default_rng(2)
    feeds = {"x": rng.normal(size=[1, C, D]), "key": rng.normal(size=[1, n, D]),
             "value": rng.normal(size=[1, n, D]), "valid": np.array([[0, 0, 1, 1, 1, 1]])}
    feeds = {k: v.astype(np.float32) for k, v in feeds.items()}
    got, want_out = _run(content, **feeds), module.f(**feeds)
    for key, value in want_out.items():
        np.testing.assert_allclose(got[key], value.numpy(), rtol=1e-5, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("pointwise", [True, False])
def test_conv_stream_graph_has_no_axis_changing_strided_slice(pointwise):
    layer = CausalConvModule(D, 5, pointwise=pointwise)
    layer(tf.zeros([1, C, D]))

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, C, D]), tf.TensorSpec([1, 4, D])])
        def f(self, x, conv):
            y, s = layer.stream(x, {"conv": conv})
            return {"y": y, "conv": s["conv"]}

    module = M()
    module.layer = layer
    content = _to_tflite(module)
    for kind, outs, options in _ops(content):
        if kind == "STRIDED_SLICE":  # XNNPACK delegates no STRIDED_SLICE with new/shrink-axis masks
            assert not options.newAxisMask and not options.shrinkAxisMask, outs
    rng = np.random.default_rng(3)
    feeds = {"x": rng.normal(size=[1, C, D]).astype(np.float32),
             "conv": rng.normal(size=[1, 4, D]).astype(np.float32)}
    got, want = _run(content, **feeds), module.f(**feeds)
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value.numpy(), rtol=1e-5, atol=1e-5, err_msg=key)
