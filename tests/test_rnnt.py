"""Tests for omni_tf.losses.rnnt against a float64 numpy brute-force RNN-T reference."""
import numpy as np
import pytest
import tensorflow as tf

from omni_tf.losses.rnnt import rnnt_loss


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def ref_loss_and_grad(logits, labels, logit_lengths, label_lengths, blank=0):
    """Per-utterance NLL [B] and d(sum NLL)/d logits [B, T, U+1, V], float64, plain (t, u) double loops."""
    logits = logits.astype(np.float64)
    losses = np.zeros(len(logits))
    grads = np.zeros_like(logits)
    for b in range(len(logits)):
        t_len, u_len = int(logit_lengths[b]), int(label_lengths[b])
        lp = _log_softmax(logits[b, :t_len, : u_len + 1])
        y = labels[b, :u_len]
        alpha = np.full((t_len, u_len + 1), -np.inf)
        for t in range(t_len):
            for u in range(u_len + 1):
                if t == 0 and u == 0:
                    alpha[t, u] = 0.0
                    continue
                stay = alpha[t - 1, u] + lp[t - 1, u, blank] if t > 0 else -np.inf
                move = alpha[t, u - 1] + lp[t, u - 1, y[u - 1]] if u > 0 else -np.inf
                alpha[t, u] = np.logaddexp(stay, move)
        beta = np.full((t_len + 1, u_len + 2), -np.inf)
        beta[t_len, u_len] = 0.0  # virtual end state after the final blank
        for t in range(t_len - 1, -1, -1):
            for u in range(u_len, -1, -1):
                stay = beta[t + 1, u] + lp[t, u, blank] if (t + 1 < t_len or u == u_len) else -np.inf
                move = beta[t, u + 1] + lp[t, u, y[u]] if u < u_len else -np.inf
                beta[t, u] = np.logaddexp(stay, move)
        log_p = alpha[t_len - 1, u_len] + lp[t_len - 1, u_len, blank]
        assert np.isclose(log_p, beta[0, 0])
        losses[b] = -log_p
        # d(-log_p)/d lp, then through log-softmax: dx = dlp - softmax * sum_k dlp
        dlp = np.zeros_like(lp)
        for t in range(t_len):
            for u in range(u_len + 1):
                if t + 1 < t_len or u == u_len:
                    dlp[t, u, blank] -= np.exp(alpha[t, u] + lp[t, u, blank] + beta[t + 1, u] - log_p)
                if u < u_len:
                    dlp[t, u, y[u]] -= np.exp(alpha[t, u] + lp[t, u, y[u]] + beta[t, u + 1] - log_p)
        grads[b, :t_len, : u_len + 1] = dlp - np.exp(lp) * dlp.sum(-1, keepdims=True)
    return losses, grads


def make_case(rng, b, t, u, v, blank=0, ragged=True):
    logits = rng.standard_normal((b, t, u + 1, v)).astype(np.float32)
    labels = rng.integers(0, v - 1, size=(b, u)).astype(np.int32)
    labels += (labels >= blank).astype(np.int32)  # never the blank
    if ragged:
        logit_lengths = rng.integers(1, t + 1, size=b).astype(np.int32)
        label_lengths = rng.integers(0, u + 1, size=b).astype(np.int32)
        logit_lengths[0], label_lengths[0] = t, u
    else:
        logit_lengths = np.full(b, t, np.int32)
        label_lengths = np.full(b, u, np.int32)
    return logits, labels, logit_lengths, label_lengths


def loss_and_grad(logits, labels, logit_lengths, label_lengths, blank=0, reduction="sum", dtype=tf.float32):
    x = tf.constant(logits, dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = rnnt_loss(x, labels, logit_lengths, label_lengths, blank=blank, reduction=reduction)
    return loss.numpy(), tape.gradient(loss, x).numpy()


@pytest.mark.parametrize(
    "seed,shape,blank",
    [
        (0, (3, 7, 4, 6), 0),
        (1, (4, 12, 6, 9), 0),
        (2, (2, 5, 3, 5), 3),  # blank in the middle of the vocabulary
        (3, (2, 1, 3, 4), 0),  # a single frame
        (4, (2, 6, 0, 4), 0),  # no labels at all
        (5, (1, 1, 0, 3), 0),  # a single lattice node
    ],
)
def test_loss_and_grad_match_reference(seed, shape, blank):
    rng = np.random.default_rng(seed)
    case = make_case(rng, *shape, blank=blank)
    ref_losses, ref_grads = ref_loss_and_grad(*case, blank=blank)
    losses, _ = loss_and_grad(*case, blank=blank, reduction="none")
    _, grads = loss_and_grad(*case, blank=blank, reduction="sum")
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(grads, ref_grads, atol=2e-5)


def test_peaked_logits_use_exact_log_probs():
    """Probabilities below float32 normals (logit gaps > 87) must not be clipped: x - logsumexp path."""
    rng = np.random.default_rng(11)
    logits, labels, ll, ul = make_case(rng, 2, 6, 3, 5)
    logits *= 40.0
    assert (_log_softmax(logits.astype(np.float64)) < -100).any()
    ref_losses, ref_grads = ref_loss_and_grad(logits, labels, ll, ul)
    losses, _ = loss_and_grad(logits, labels, ll, ul, reduction="none")
    grads = loss_and_grad(logits, labels, ll, ul)[1]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    np.testing.assert_allclose(grads, ref_grads, atol=1e-4)


def test_reference_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    logits, labels, ll, ul = make_case(rng, 2, 4, 3, 5)
    _, ref_grads = ref_loss_and_grad(logits, labels, ll, ul)
    grads = loss_and_grad(logits, labels, ll, ul)[1]
    x = logits.astype(np.float64)
    eps = 1e-5

    def total(z):
        return ref_loss_and_grad(z, labels, ll, ul)[0].sum()

    for idx in [(0, 0, 0, 0), (0, 3, 3, 0), (0, 1, 2, labels[0, 2]), (1, 0, 0, 4), (0, 2, 1, 3)]:
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        fd = (total(plus) - total(minus)) / (2 * eps)
        assert abs(fd - ref_grads[idx]) < 1e-6, idx
        assert abs(fd - grads[idx]) < 2e-5, idx


def test_reductions_and_upstream_scale():
    rng = np.random.default_rng(6)
    case = make_case(rng, 3, 6, 3, 5)
    per_utt, grad_none = loss_and_grad(*case, reduction="none")
    total, grad_sum = loss_and_grad(*case, reduction="sum")
    mean, grad_mean = loss_and_grad(*case, reduction="mean")
    assert per_utt.shape == (3,)
    np.testing.assert_allclose(total, per_utt.sum(), rtol=1e-6)
    np.testing.assert_allclose(mean, per_utt.mean(), rtol=1e-6)
    np.testing.assert_allclose(grad_none, grad_sum, atol=1e-7)  # tape of a vector sums it
    np.testing.assert_allclose(grad_mean, grad_sum / 3, atol=1e-7)
    # negative and zero per-utterance weights go through the fused backward correctly
    x = tf.constant(case[0])
    weights = tf.constant([-2.0, 0.0, 0.5])
    with tf.GradientTape() as tape:
        tape.watch(x)
        weighted = tf.reduce_sum(rnnt_loss(x, *case[1:]) * weights)
    grad = tape.gradient(weighted, x).numpy()
    _, ref_grads = ref_loss_and_grad(*case)
    per_b = [ref_loss_and_grad(*(a[i : i + 1] for a in case))[1][0] for i in range(3)]
    expected = np.stack([w * g for w, g in zip([-2.0, 0.0, 0.5], per_b, strict=True)])
    np.testing.assert_allclose(grad, expected, atol=5e-5)
    with pytest.raises(ValueError, match="reduction"):
        rnnt_loss(x, *case[1:], reduction="avg")


def test_zero_gradient_at_padding():
    rng = np.random.default_rng(7)
    logits, labels, ll, ul = make_case(rng, 3, 8, 5, 6)
    ll[1], ul[1], ll[2], ul[2] = 3, 2, 8, 0
    _, grads = loss_and_grad(logits, labels, ll, ul)
    for b in range(3):
        assert np.all(grads[b, ll[b] :] == 0.0)
        assert np.all(grads[b, :, ul[b] + 1 :] == 0.0)
        assert np.any(grads[b, : ll[b], : ul[b] + 1] != 0.0)
    # each valid node's gradient sums to zero over V (softmax Jacobian)
    np.testing.assert_allclose(grads.sum(-1), 0.0, atol=1e-5)


def test_long_sequence_is_stable():
    rng = np.random.default_rng(8)
    logits, labels, ll, ul = make_case(rng, 2, 1000, 200, 12)
    logits *= 4.0
    ll[1], ul[1] = 700, 150
    losses, grads = loss_and_grad(logits, labels, ll, ul, reduction="none")
    ref_losses, _ = _fast_ref_loss(logits, labels, ll, ul)
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(grads))
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    np.testing.assert_allclose(grads.sum(-1), 0.0, atol=1e-4)


def _fast_ref_loss(logits, labels, logit_lengths, label_lengths, blank=0):
    """Float64 log-space alpha recursion, loop over t with a cumulative logaddexp over u (for long cases)."""
    losses = []
    for b in range(len(logits)):
        t_len, u_len = int(logit_lengths[b]), int(label_lengths[b])
        lp = _log_softmax(logits[b, :t_len, : u_len + 1].astype(np.float64))
        lp_blank = lp[:, :, blank]
        lp_label = np.take_along_axis(lp[:, :u_len], labels[b, :u_len][None, :, None], axis=2)[..., 0]
        alpha = np.concatenate([[0.0], np.cumsum(lp_label[0])])
        for t in range(1, t_len):
            stay = alpha + lp_blank[t - 1]
            row = np.empty_like(stay)
            row[0] = stay[0]
            for u in range(1, u_len + 1):
                row[u] = np.logaddexp(stay[u], row[u - 1] + lp_label[t, u - 1])
            alpha = row
        losses.append(-(alpha[u_len] + lp_blank[t_len - 1, u_len]))
    return np.array(losses), None


def test_inside_tf_function_with_dynamic_shapes():
    rng = np.random.default_rng(9)
    spec = [
        tf.TensorSpec([None, None, None, None], tf.float32),
        tf.TensorSpec([None, None], tf.int32),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None], tf.int32),
    ]

    @tf.function(input_signature=spec)
    def step(x, y, xl, yl):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = rnnt_loss(x, y, xl, yl, reduction="sum")
        return loss, tape.gradient(loss, x)

    for shape in [(2, 5, 3, 6), (3, 9, 2, 6)]:
        case = make_case(rng, *shape)
        loss, grad = step(*case)
        ref_losses, ref_grads = ref_loss_and_grad(*case)
        np.testing.assert_allclose(loss.numpy(), ref_losses.sum(), rtol=1e-5)
        np.testing.assert_allclose(grad.numpy(), ref_grads, atol=2e-5)


def test_distribute_replica_context_and_mixed_precision():
    rng = np.random.default_rng(10)
    case = make_case(rng, 2, 6, 3, 7)
    ref_losses, ref_grads = ref_loss_and_grad(*case)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])

    @tf.function
    def replica_step(x, y, xl, yl):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = rnnt_loss(x, y, xl, yl, reduction="sum")
        return loss, tape.gradient(loss, x)

    loss, grad = strategy.run(replica_step, args=tuple(tf.constant(a) for a in case))
    np.testing.assert_allclose(loss.numpy(), ref_losses.sum(), rtol=1e-5)
    np.testing.assert_allclose(grad.numpy(), ref_grads, atol=2e-5)
    for dtype, tol in [(tf.float16, 2e-3), (tf.bfloat16, 2e-2)]:
        rounded = tf.cast(tf.cast(case[0], dtype), tf.float32).numpy()
        ref_l, ref_g = ref_loss_and_grad(rounded, *case[1:])
        loss, grad = loss_and_grad(rounded, *case[1:], dtype=dtype)
        assert grad.dtype == dtype.as_numpy_dtype
        np.testing.assert_allclose(loss, ref_l.sum(), rtol=1e-5)
        np.testing.assert_allclose(grad.astype(np.float32), ref_g, atol=tol)


def test_bad_inputs_raise():
    x = tf.zeros([2, 4, 3, 5])
    y = tf.ones([2, 2], tf.int32)
    with pytest.raises(ValueError, match="labels axis 1"):
        rnnt_loss(x, tf.ones([2, 3], tf.int32), [4, 4], [2, 2])
    with pytest.raises(ValueError, match="logits must be"):
        rnnt_loss(tf.zeros([2, 4, 5]), y, [4, 4], [2, 2])
    with pytest.raises(ValueError, match="blank"):
        rnnt_loss(x, y, [4, 4], [2, 2], blank=5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="label_lengths > U"):
        rnnt_loss(x, y, [4, 4], [3, 2])
    with pytest.raises(tf.errors.InvalidArgumentError, match="logit_lengths must be >= 1"):
        rnnt_loss(x, y, [0, 4], [2, 2])


@pytest.mark.parametrize("pad", [-1, 7, 1000])
def test_padding_past_label_lengths_is_ignored(pad):
    """Labels padded with -1 (or any id) past label_lengths: same loss and grad as 0-padded labels."""
    rng = np.random.default_rng(3)
    b, t, u, v = 3, 6, 4, 5
    logits = tf.constant(rng.normal(size=(b, t, u + 1, v)).astype(np.float32))
    label_lengths = tf.constant([4, 2, 0], tf.int32)
    zero = rng.integers(1, v, (b, u)).astype(np.int32) * (np.arange(u)[None] < label_lengths.numpy()[:, None])
    padded = np.where(np.arange(u)[None] < label_lengths.numpy()[:, None], zero, pad).astype(np.int32)
    logit_lengths = tf.constant([6, 5, 3], tf.int32)
    out = []
    for labels in (zero, padded):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = rnnt_loss(logits, labels, logit_lengths, label_lengths)
        out.append((loss.numpy(), tape.gradient(loss, logits).numpy()))
    np.testing.assert_array_equal(out[1][0], out[0][0])
    np.testing.assert_array_equal(out[1][1], out[0][1])
    assert np.all(np.isfinite(out[0][0]))
