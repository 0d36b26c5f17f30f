"""Pure-TensorFlow RNN-T loss (Graves 2012): log-space, anti-diagonal vectorized, fused log-softmax.

Dimension key: B batch, T encoder frames, U max label length (logits carry U + 1 = U1 predictor
positions), V vocabulary.

Design (why it is fast without custom ops):
- Forward runs one fused ``tf.nn.softmax`` over V (kept for the backward pass) and gathers only the blank and
  label probabilities, so the lattice recursions run on ``[B, T, U+1]`` log-probabilities; log-softmax over
  ``[B, T, U+1, V]`` is never materialized. If a gathered probability is below float32 normals (logit gaps
  > ~69) the log-probabilities come from ``x - logsumexp(x)`` instead (exact, one more pass, rare).
- alpha and beta run in ONE loop over the T + U - 1 anti-diagonals (t + u = const): beta is computed as the
  alpha of the per-utterance reversed lattice, so both recursions share one body on a ``[2B, U+1]`` state.
- ``tf.custom_gradient`` returns d loss / d logits as ``softmax * (g * occ)`` (one elementwise pass) minus the
  blank / label corrections, subtracted with one in-place scatter of ``2 * B * T * (U+1)`` values.

Gradient: for node (t, u) let ``gb = exp(alpha + lp_blank + beta(t+1, u) - logP)`` (blank edge occupancy),
``gy = exp(alpha + lp_label + beta(t, u+1) - logP)`` (label edge) and
``occ = gb + gy = exp(alpha + beta - logP)``. Graves' eq. 16 gives
d(-logP)/d lp_k = -gb [k == blank] - gy [k == y_{u+1}]; through the log-softmax Jacobian
d lp_j / d x_k = [j == k] - softmax_k this becomes
``softmax_k * occ - [k == blank] * gb - [k == y_{u+1}] * gy``.
It is zero where t >= logit_length or u > label_length (beta is log-zero there).
"""
from __future__ import annotations

import tensorflow as tf

_NEG = -1e30  # finite "log zero": -inf would give inf - inf = nan in log-add-exp
_TINY = 1e-30  # smallest picked softmax value whose log is used directly (float32 normals start at 1.2e-38)
_UNROLL = 4  # anti-diagonals per loop iteration (fewer loop-control ops)
_REDUCTIONS = ("none", "mean", "sum")


def _logaddexp(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    hi = tf.maximum(a, b)
    return hi + tf.nn.softplus(tf.minimum(a, b) - hi)


@tf.function(
    input_signature=[
        tf.TensorSpec([None, None, None], tf.float32),
        tf.TensorSpec([None, None, None], tf.float32),
        tf.TensorSpec([None, None], tf.float32),
    ],
    autograph=False,
)
def _diagonal_scan(emit_stay: tf.Tensor, emit_move: tf.Tensor, init: tf.Tensor) -> tf.Tensor:
    """Runs x_m[u] = logaddexp(x_{m-1}[u] + stay[m][u], x_{m-1}[u-1] + move[m][u]) over anti-diagonals.

    Args:
      emit_stay, emit_move: [M, N, U1] log-weights of the two incoming edges of each diagonal m = 1..M.
      init: [N, U1] diagonal 0.
    Returns:
      [M + 1, N, U1] all diagonals, init first.
    """
    num_diag, rows, u1 = tf.unstack(tf.shape(emit_stay))
    neg_col = tf.fill([rows, 1], tf.constant(_NEG, tf.float32))
    num_blocks = tf.maximum((num_diag + _UNROLL - 1) // _UNROLL, 1)  # >= 1: scan cannot stack zero steps
    pad = [[0, num_blocks * _UNROLL - num_diag], [0, 0], [0, 0]]
    blocks = [tf.reshape(tf.pad(e, pad), [-1, _UNROLL, rows, u1]) for e in (emit_stay, emit_move)]

    def step(prev, elems):
        stay, move = elems
        x, out = prev[-1], []
        for j in range(_UNROLL):
            shifted = tf.concat([neg_col, x[:, :-1]], axis=1)
            x = _logaddexp(x + stay[j], shifted + move[j])
            out.append(x)
        return tf.stack(out)

    init_block = tf.broadcast_to(init, [_UNROLL, rows, u1])
    diags = tf.reshape(tf.scan(step, tuple(blocks), initializer=init_block), [-1, rows, u1])[:num_diag]
    return tf.stop_gradient(tf.concat([init[None], diags], axis=0))


def _gather_or(source: tf.Tensor, index: tf.Tensor, valid: tf.Tensor, fill: float) -> tf.Tensor:
    """source[index] where valid else fill (source is flat)."""
    values = tf.gather(source, tf.where(valid, index, tf.zeros_like(index)))
    return tf.where(valid, values, tf.constant(fill, source.dtype))


def _lattice(
    lp_blank: tf.Tensor, lp_label: tf.Tensor, logit_lengths: tf.Tensor, label_lengths: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Forward/backward variables of the RNN-T lattice.

    Args:
      lp_blank, lp_label: [B, T, U1] log-probabilities of blank and of label y_{u+1} at (t, u)
        (lp_label[:, :, U] is never read).
      logit_lengths, label_lengths: [B] int32.
    Returns:
      (alpha [B, T, U1], beta_next_t [B, T, U1] = beta(t+1, u), beta_next_u [B, T, U1] = beta(t, u+1),
      log_p [B]); beta(T_b, U_b) = 0 is the virtual end state, beta is _NEG off the lattice of utterance b.
    """
    shape = tf.shape(lp_blank)
    batch, max_t, u1 = shape[0], shape[1], shape[2]
    num_diag = max_t + u1 - 1
    source = tf.concat([tf.reshape(lp_blank, [-1]), tf.reshape(lp_label, [-1])], axis=0)
    label_offset = batch * max_t * u1

    b = tf.range(batch)[None, :, None]  # [1, B, 1]
    m = tf.range(1, num_diag)[:, None, None]  # [M, 1, 1]
    u = tf.range(u1)[None, None, :]  # [1, 1, U1]
    t_len = logit_lengths[None, :, None]
    u_len = label_lengths[None, :, None]

    def flat(t, uu):
        return (b * max_t + t) * u1 + uu

    # alpha: stay edge = blank from (m-1-u, u), move edge = label from (m-u, u-1).
    t_a = m - 1 - u
    a_stay_ok = (t_a >= 0) & (t_a < max_t)
    a_move_ok = (t_a + 1 >= 0) & (t_a + 1 < max_t) & (u >= 1)
    # beta as alpha of the reversed lattice: position (t', u') <-> (T_b-1-t', U_b-u'); stay edge is blank at
    # (T_b-1-(m-u'), U_b-u'), move edge is the label at the same node.
    t_r = t_len - 1 - (m - u)
    u_r = u_len - u
    r_ok = (t_r >= 0) & (u_r >= 0) & (u <= m)
    a_stay = _gather_or(source, flat(t_a, u), a_stay_ok, _NEG)
    a_move = _gather_or(source, label_offset + flat(t_a + 1, u - 1), a_move_ok, _NEG)
    r_stay = _gather_or(source, flat(t_r, u_r), r_ok, _NEG)
    r_move = _gather_or(source, label_offset + flat(t_r, u_r), r_ok & (u >= 1), _NEG)

    end_blank = tf.gather_nd(lp_blank, tf.stack([tf.range(batch), logit_lengths - 1, label_lengths], axis=1))
    first = tf.one_hot(tf.zeros([batch], tf.int32), u1, on_value=0.0, off_value=_NEG)
    last = tf.concat([end_blank[:, None], tf.fill([batch, u1 - 1], tf.constant(_NEG, tf.float32))], axis=1)
    init = tf.concat([first, last], axis=0)
    diags = _diagonal_scan(
        tf.concat([a_stay, r_stay], axis=1), tf.concat([a_move, r_move], axis=1), init
    )  # [num_diag, 2B, U1]
    flat_diags = tf.concat([tf.reshape(diags, [-1]), tf.constant([_NEG, 0.0])], axis=0)
    neg_slot, zero_slot = tf.size(diags), tf.size(diags) + 1

    bb = tf.range(batch)[:, None, None]
    tt = tf.range(max_t)[None, :, None]
    uu = tf.range(u1)[None, None, :]
    alpha = tf.gather(flat_diags, ((tt + uu) * 2 * batch + bb) * u1 + uu)

    t_len_b = logit_lengths[:, None, None]
    u_len_b = label_lengths[:, None, None]

    def beta_at(t, u_, end_slot):
        rt, ru = t_len_b - 1 - t, u_len_b - u_
        idx = ((rt + ru) * 2 * batch + batch + bb) * u1 + ru
        idx = tf.where((rt >= 0) & (ru >= 0), idx, neg_slot)
        return tf.gather(flat_diags, tf.where((t == t_len_b) & (u_ == u_len_b), end_slot, idx))

    end_node = tf.stack([tf.range(batch), logit_lengths - 1, label_lengths], axis=1)
    log_p = tf.gather_nd(alpha, end_node) + end_blank
    return alpha, beta_at(tt + 1, uu, zero_slot), beta_at(tt, uu + 1, neg_slot), log_p


def _check_inputs(logits, labels, logit_lengths, label_lengths, blank) -> list[tf.Operation]:
    if logits.shape.rank != 4:
        raise ValueError(f"rnnt_loss: logits must be [B, T, U+1, V], got shape {logits.shape}")
    if labels.shape.rank != 2:
        raise ValueError(f"rnnt_loss: labels must be [B, U], got shape {labels.shape}")
    if logit_lengths.shape.rank != 1 or label_lengths.shape.rank != 1:
        raise ValueError("rnnt_loss: logit_lengths and label_lengths must be [B]")
    if logits.shape[2] is not None and labels.shape[1] is not None and logits.shape[2] != labels.shape[1] + 1:
        raise ValueError(
            f"rnnt_loss: logits axis 2 ({logits.shape[2]}) must be labels axis 1 + 1 ({labels.shape[1]} + 1)"
        )
    if isinstance(blank, int) and logits.shape[3] is not None and not 0 <= blank < logits.shape[3]:
        raise ValueError(f"rnnt_loss: blank={blank} outside vocabulary of size {logits.shape[3]}")
    shape = tf.shape(logits)
    return [
        tf.debugging.assert_greater_equal(logit_lengths, 1, message="rnnt_loss: logit_lengths must be >= 1"),
        tf.debugging.assert_less_equal(logit_lengths, shape[1], message="rnnt_loss: logit_lengths > T"),
        tf.debugging.assert_greater_equal(label_lengths, 0, message="rnnt_loss: label_lengths must be >= 0"),
        tf.debugging.assert_less_equal(label_lengths, shape[2] - 1, message="rnnt_loss: label_lengths > U"),
    ]


def _mask_padding(labels: tf.Tensor, label_lengths: tf.Tensor, blank: int) -> tf.Tensor:
    """[B, U] labels with every entry at or past ``label_lengths`` set to ``blank`` (a valid gather index)."""
    valid = tf.range(tf.shape(labels)[1])[None, :] < label_lengths[:, None]
    return tf.where(valid, labels, tf.cast(blank, labels.dtype))


def rnnt_loss(
    logits: tf.Tensor,
    labels: tf.Tensor,
    logit_lengths: tf.Tensor,
    label_lengths: tf.Tensor,
    blank: int = 0,
    reduction: str = "none",
) -> tf.Tensor:
    """RNN-T negative log-likelihood -log P(labels | logits).

    Args:
      logits: [B, T, U+1, V] unnormalized joiner outputs (float32, or float16/bfloat16: computed in float32);
        log-softmax over V is applied inside.
      labels: [B, U] int32 label ids in [0, V); entries at or past label_lengths are ignored (any value, e.g.
        -1 padding: they are replaced by ``blank`` before any gather, so loss and gradient equal those of
        0-padded labels).
      logit_lengths: [B] int32 valid frames per utterance, 1 <= T_b <= T.
      label_lengths: [B] int32 valid labels per utterance, 0 <= U_b <= U.
      blank: blank id in [0, V).
      reduction: "none" -> [B]; "mean" -> mean over the batch; "sum" -> sum over the batch.
    Returns:
      Loss in float32, gradients w.r.t. logits in the logits' dtype (zero at padded positions).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"rnnt_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    logits = tf.convert_to_tensor(logits)
    if not logits.dtype.is_floating:
        raise TypeError(f"rnnt_loss: logits must be floating point, got {logits.dtype}")
    labels = tf.cast(labels, tf.int32)
    logit_lengths = tf.cast(logit_lengths, tf.int32)
    label_lengths = tf.cast(label_lengths, tf.int32)
    checks = _check_inputs(logits, labels, logit_lengths, label_lengths, blank)
    labels = _mask_padding(labels, label_lengths, blank)
    with tf.control_dependencies(checks):
        logits32 = tf.cast(logits, tf.float32) if logits.dtype != tf.float32 else tf.identity(logits)
    losses = _rnnt_nll(logits32, labels, logit_lengths, label_lengths, blank)
    if reduction == "mean":
        return tf.reduce_mean(losses)
    if reduction == "sum":
        return tf.reduce_sum(losses)
    return losses


def _rnnt_nll(logits, labels, logit_lengths, label_lengths, blank) -> tf.Tensor:
    """[B] losses of float32 logits [B, T, U1, V] with the fused custom gradient."""
    shape = tf.shape(logits)
    batch, max_t, u1 = shape[0], shape[1], shape[2]
    # label for node (t, u) is y_{u+1} = labels[:, u]; the last node row has none (use blank, never read)
    next_label = tf.concat([labels, tf.fill([batch, 1], tf.constant(blank, tf.int32))], axis=1)
    token_ids = tf.stack(
        [tf.fill([batch, u1], tf.constant(blank, tf.int32)), next_label], axis=-1
    )  # [B, U1, 2]
    token_ids = tf.broadcast_to(token_ids[:, None], [batch, max_t, u1, 2])

    @tf.custom_gradient
    def nll(x):
        probs = tf.nn.softmax(x)  # [B, T, U1, V], kept for the backward pass
        picked = tf.gather(probs, token_ids, batch_dims=3)  # [B, T, U1, 2]
        # log(softmax) is exact while it is a normal float; otherwise use x - logsumexp(x) (one more pass)
        log_picked = tf.cond(
            tf.reduce_min(picked) > _TINY,
            lambda: tf.math.log(picked),
            lambda: tf.gather(x, token_ids, batch_dims=3) - tf.reduce_logsumexp(x, axis=-1, keepdims=True),
        )
        lp_blank, lp_label = log_picked[..., 0], log_picked[..., 1]
        alpha, beta_t, beta_u, log_p = _lattice(lp_blank, lp_label, logit_lengths, label_lengths)

        def grad(upstream):
            g = tf.broadcast_to(upstream, tf.shape(log_p))[:, None, None]  # [B, 1, 1]
            base = alpha - log_p[:, None, None]
            g_blank = tf.exp(base + lp_blank + beta_t)
            g_label = tf.exp(base + lp_label + beta_u)
            dx = tf.reshape(probs * (g * (g_blank + g_label))[..., None], [-1])
            num_nodes = tf.cast(batch * max_t * u1, tf.int64)
            flat_node = tf.reshape(tf.range(num_nodes) * tf.cast(shape[3], tf.int64), [batch, max_t, u1, 1])
            index = tf.reshape(flat_node + tf.cast(token_ids, tf.int64), [-1, 1])
            updates = tf.reshape(tf.stack([g * g_blank, g * g_label], axis=-1), [-1])
            return tf.reshape(tf.tensor_scatter_nd_sub(dx, index, updates), shape)

        return -log_p, grad

    return nll(logits)
