"""Where one train step's time goes, and what fraction of this machine's fp32 matmul rate it reaches.

Used by ``benchmarks/train_step.py --breakdown`` (kept apart so the mode comparison stays short).

Parts, each timed as its own ``tf.function`` on the same batch (median of ``repeats`` calls after a warm-up):
- ``input``: one batch from the source (the real pipeline with ``--data_dir``, else random features),
- ``encoder``: encoder forward + backward (gradient of a fixed random projection of its output),
- ``joiner_loss``: predictor + joiner + RNN-T loss forward + backward on a fixed encoder output,
- ``masks``: writing one subnet's masks (``apply_levels``; once per subnet per step) and one re-ranking
  (``update_rankings``; every ``sparsity.frequency`` steps during the ramp, shown per call),
- ``step``: the whole ``TrainStep`` (all of the above but input, plus clipping and Adam),
and ``other = step - encoder - joiner_loss - subnets * masks_apply``.
Matmul work: FLOPs of MatMul / BatchMatMul / Conv2D / depthwise ops (forward and backward) counted from the
traced forward + backward graph with static shapes (elementwise ops are not counted), divided by the step
time, over the measured rate of an fp32 ``n x n`` matmul under the same thread setting.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

MATMUL_OPS = ("MatMul", "BatchMatMulV2", "BatchMatMulV3", "BatchMatMul")
CONV_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "DepthwiseConv2dNative",
            "DepthwiseConv2dNativeBackpropInput", "DepthwiseConv2dNativeBackpropFilter")


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time (s) of ``fn()`` over ``repeats`` calls after one warm-up call; outputs are read."""
    def run():
        out = fn()
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)

    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def matmul_rate(n: int = 1024, repeats: int = 10) -> float:
    """Measured fp32 ``[n, n] x [n, n]`` matmul rate, FLOP/s (2 n^3 per product)."""
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    fn = tf.function(lambda: tf.matmul(a, b))
    return 2.0 * n ** 3 / median_seconds(fn, repeats)


def _dims(shape: tf.TensorShape) -> list[int] | None:
    return None if shape.rank is None or None in shape.as_list() else shape.as_list()


def op_flops(op: tf.Operation) -> int | None:
    """Multiply-add FLOPs (2 per MAC) of one matmul/conv op with static shapes; None if not countable."""
    out = _dims(op.outputs[0].shape)
    ins = [_dims(t.shape) for t in op.inputs]
    if out is None or any(i is None for i in ins):
        return None
    if op.type in MATMUL_OPS:
        x = ins[0]
        transposed = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
        k = x[-2] if transposed else x[-1]
        return 2 * int(np.prod(out)) * k
    if op.type == "Conv2D":
        kh, kw, cin, _ = ins[1]
        return 2 * int(np.prod(out)) * kh * kw * cin
    if op.type == "Conv2DBackpropInput":  # inputs: input_sizes, filter, out_backprop
        kh, kw, _, cout = ins[1]
        return 2 * int(np.prod(out)) * kh * kw * cout
    if op.type == "Conv2DBackpropFilter":  # inputs: input, filter_sizes, out_backprop
        return 2 * int(np.prod(ins[2])) * int(np.prod(out[:3]))
    if op.type == "DepthwiseConv2dNative":
        return 2 * int(np.prod(out)) * ins[1][0] * ins[1][1]
    if op.type == "DepthwiseConv2dNativeBackpropInput":
        return 2 * int(np.prod(ins[2])) * ins[1][0] * ins[1][1]
    if op.type == "DepthwiseConv2dNativeBackpropFilter":
        return 2 * int(np.prod(ins[2])) * int(np.prod(out[:2]))
    return None


def graph_flops(graph: tf.Graph) -> tuple[int, dict[str, int]]:
    """(counted FLOPs, {op type: ops not countable (dynamic shapes)}) over ``graph`` and its functions."""
    graphs = [graph] + [f.graph for f in getattr(graph, "_functions", {}).values() if hasattr(f, "graph")]
    total, skipped = 0, {}
    for g in graphs:
        for op in g.get_operations():
            if op.type not in MATMUL_OPS + CONV_OPS:
                continue
            f = op_flops(op)
            if f is None:
                skipped[op.type] = skipped.get(op.type, 0) + 1
            else:
                total += f
    return total, skipped


def breakdown(state: Any, run_step: Callable[[], Any], batch: dict[str, tf.Tensor], levels: np.ndarray,
              next_batch: Callable[[], Any], loss_fn: Callable[..., tf.Tensor], repeats: int
              ) -> dict[str, Any]:
    """Times (s) of the parts named in the module docstring, FLOPs per subnet and the step's FLOP/s.

    ``state``: a ``loop.TrainState``; ``run_step()``: one ``TrainStep`` on ``batch`` with ``levels``;
    ``batch``: the same batch, not distributed, static shapes; ``levels [S, N]``: the step's subnets;
    ``next_batch()``: pulls one batch from the input source.
    """
    model, masks = state.model, state.masks
    feats, feat_len = batch["features"], batch["feature_lengths"]
    tokens, tok_len = batch["tokens"], batch["token_lengths"]
    enc_vars = model.encoder.trainable_variables
    rest_vars = model.predictor.trainable_variables + model.joiner.trainable_variables
    enc0, enc_len = model.encode(feats, feat_len, training=True)
    proj = tf.random.normal(enc0.shape)

    @tf.function(autograph=False)
    def encoder_part():
        with tf.GradientTape() as tape:
            enc, _ = model.encode(feats, feat_len, training=True)
            y = tf.reduce_sum(enc * proj)
        return tape.gradient(y, enc_vars)

    enc_const = tf.constant(enc0)

    @tf.function(autograph=False)
    def joiner_loss_part():
        with tf.GradientTape() as tape:
            tape.watch(enc_const)
            pred = model.predictor_forward(tokens, training=True)
            logits = model.join(enc_const[:, :, None, :], pred[:, None, :, :])
            loss = tf.reduce_sum(loss_fn(logits, tokens, enc_len, tok_len))
        return tape.gradient(loss, rest_vars + [enc_const])

    @tf.function(autograph=False)
    def forward_backward():
        with tf.GradientTape() as tape:
            logits, lengths = model(batch, training=True)
            loss = tf.reduce_sum(loss_fn(logits, tokens, lengths, tok_len))
        return tape.gradient(loss, model.trainable_variables)

    times = {"input": median_seconds(next_batch, repeats),
             "encoder": median_seconds(encoder_part, repeats),
             "joiner_loss": median_seconds(joiner_loss_part, repeats)}
    row = tf.convert_to_tensor(levels[-1], tf.int32)
    times["masks_apply"] = median_seconds(lambda: masks.apply_levels(row), repeats) if masks else 0.0
    times["masks_rerank"] = (median_seconds(lambda: masks.update_rankings(masks.levels), max(1, repeats // 3))
                             if masks else 0.0)
    times["step"] = median_seconds(run_step, repeats)
    subnets = int(levels.shape[0])
    per_subnet = times["encoder"] + times["joiner_loss"] + times["masks_apply"]
    times["other"] = times["step"] - subnets * per_subnet
    flops, skipped = graph_flops(forward_backward.get_concrete_function().graph)
    return {"seconds": times, "subnets_per_step": subnets, "flops_per_subnet": flops,
            "uncounted_ops": skipped, "step_flops_per_s": subnets * flops / times["step"]}
