"""The distributed train step: sampled subnets, gradient accumulation, NaN/Inf skip, clipping, Adam.

Dimension key: B utterances per replica, T' encoder frames, U labels, V vocab, S subnets per step,
N prunable kernels, M micro-batches per step (``grad_accum_steps``).

One call = one optimizer update (or one skipped update). For each sampled subnet ``s`` (a level vector
``[N]``, row ``s`` of ``levels [S, N]``) the masks are written in cross-replica context
(``SupernetMasks.apply_levels``) and every micro-batch runs forward + backward on every replica; gradients
are summed in place. Each utterance's loss is divided by the global number of utterances in its micro-batch,
by M and weighted by ``w_s / sum(w)`` (``weights [S]``, float32, the subnets' loss weights: all 1, i.e. 1/S,
unless ``sparsity.tier_weights``), so the cross-replica sum is the weighted mean loss of the step over its
subnets, whatever the replica count. ``subnet_loss`` stays each subnet's unweighted mean loss. With
``distill_weight > 0`` row 0 must be the dense subnet (the teacher): the other subnets learn from its
joiner (and CTC-head) distributions under stop-gradient, combined with the label loss per ``distill_mode``
(``omni_tf/training/distill.py``). With a ``ctc_head`` (``omni_tf/losses/ctc.py``) every subnet's label loss
is RNN-T + ``ctc_weight`` x CTC on the encoder output.

Non-finite loss or gradients: every replica sees the same all-reduced gradients, so every replica takes the
same branch of a cross-replica ``tf.cond`` that skips ``apply_gradients``; the skip is counted in
``counters.skipped_nonfinite``. With a ``keras.mixed_precision.LossScaleOptimizer`` (mixed float16) the loss
is scaled by it and the gradients unscaled; every step goes through its ``apply_gradients``, which skips the
non-finite ones itself and halves its scale (a step skipped here for a non-finite loss with finite gradients
is handed to it as non-finite gradients, so both skip the same steps).

Dropout is stateless: each forward pass runs in ``dropout_seed(fold_in(seed, step, subnet, micro-batch,
replica))`` (``omni_tf.layers.dropout``), so its masks are a function of saved counters and resume is exact.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf
import tf_keras as keras

from omni_tf.layers.dropout import dropout_seed
from omni_tf.losses.ctc import ctc_loss
from omni_tf.training import distill
from omni_tf.training.checkpoint import TrainCounters
from omni_tf.training.distill import distillation_kl  # noqa: F401  (re-exported: the historical home)

Batch = dict[str, Any]


def _all_finite(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
    return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(t)) for t in tensors]))


class TrainStep:
    """Callable ``(micro_batches, levels [S, N] int32, weights [S] float32 = all 1) -> dict`` running one
    update under ``strategy``.

    ``micro_batches`` is a tuple of M distributed batches (dicts with features, feature_lengths, tokens,
    token_lengths, ids). ``weights``: the subnets' positive loss weights (``Sampler.row_weights``); subnet
    ``s``'s loss is scaled by ``weights[s] / sum(weights)`` (module docstring). Returns cross-replica scalars
    ``loss`` (the unweighted mean of ``subnet_loss``, comparable across weightings), ``subnet_loss [S]``
    (each subnet's mean loss, unweighted),
    ``grad_norm`` (before clipping), ``applied`` (bool), ``utts`` and ``frames`` (global counts),
    ``ctc_infeasible`` (utterances whose CTC loss was masked, global count; 0 without a head), plus
    ``per_utt_loss`` / ``ids``: lists of this process's per-replica tensors (to name bad utterances).
    Masks and optimizer slots must be built before the first call (no variable creation inside).
    ``optimizer`` may be a ``keras.mixed_precision.LossScaleOptimizer`` (loss scaling for float16).
    ``element_spec`` (the distributed dataset's, with None batch/time dims) fixes the trace signature;
    without it shapes are relaxed by ``reduce_retracing`` (a few traces). ``seed`` keys the dropout masks.
    ``extra_variables``: trainable variables outside the model and the head that the model reads (the
    per-level LayerNorm parameters); the optimizer must be built on ``variables``.
    """

    def __init__(self, model: tf.keras.Model, optimizer: Any, strategy: tf.distribute.Strategy,
                 loss_fn: Callable[..., tf.Tensor], counters: TrainCounters, masks: Any | None = None,
                 distill_weight: float = 0.0, clip_norm: float = 0.0, element_spec: Any = None,
                 seed: int = 0, ctc_head: tf.keras.layers.Layer | None = None, ctc_weight: float = 0.0,
                 distill_mode: str = "add", distill_norm: str = "nodes",
                 extra_variables: Sequence[tf.Variable] = ()):
        distill.check(distill_mode, float(distill_weight), distill_norm)
        self.model, self.optimizer, self.strategy = model, optimizer, strategy
        self.ctc_head = ctc_head if ctc_weight > 0 else None
        self.ctc_weight = float(ctc_weight)
        self.distill_mode, self.distill_norm = distill_mode, distill_norm
        self.loss_fn, self.counters, self.masks = loss_fn, counters, masks
        self.distill_weight, self.clip_norm = float(distill_weight), float(clip_norm)
        self.scaled = isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
        self.element_spec = element_spec
        self.seed = int(seed)
        self.extra_variables = list(extra_variables)
        self._fns: dict[tuple[int, int], Callable] = {}

    @property
    def variables(self) -> list[tf.Variable]:
        """What the optimizer updates: the model's trainable variables, then the CTC head's (if any), then
        ``extra_variables`` (per-level LayerNorm parameters, ``omni_tf/sparsity/level_norms.py``)."""
        head = self.ctc_head.trainable_variables if self.ctc_head is not None else []
        return list(self.model.trainable_variables) + list(head) + self.extra_variables

    def __call__(self, micro_batches: Sequence[Batch], levels: tf.Tensor,
                 weights: tf.Tensor | None = None) -> dict[str, Any]:
        rows = tuple(tf.unstack(tf.convert_to_tensor(levels, tf.int32)))
        weights = tf.ones([len(rows)], tf.float32) if weights is None else tf.convert_to_tensor(weights,
                                                                                                  tf.float32)
        if weights.shape != (len(rows),):
            raise ValueError(f"weights must be [S] = [{len(rows)}] (one per levels row), got {weights.shape}")
        key = (len(micro_batches), len(rows))
        if key not in self._fns:  # one trace per (M, S): batch dims are None in the signature
            if self.element_spec is None:
                self._fns[key] = tf.function(self._step, reduce_retracing=True, autograph=False)
            else:
                row_spec = tf.TensorSpec(rows[0].shape, tf.int32)
                signature = [(self.element_spec,) * key[0], (row_spec,) * key[1],
                             tf.TensorSpec([key[1]], tf.float32)]
                self._fns[key] = tf.function(self._step, input_signature=signature, autograph=False)
        return self._fns[key](tuple(micro_batches), rows, weights)

    # -- replica functions -------------------------------------------------------------------------------
    def _forward_backward(self, batch: Batch, grads: list[tf.Tensor] | None,
                          teacher: tuple[tf.Tensor, ...] | None, scale: tf.Tensor, seed: tf.Tensor):
        """One subnet on one micro-batch on this replica; ``scale = w_s / (M * sum(w))`` (float32 scalar).
        ``teacher``: the dense subnet's (joiner logits, [CTC logits]) on this micro-batch, for a student; None
        for the teacher.
        ``seed [2]`` of the (step, subnet, micro-batch), folded with the replica id for the dropout masks."""
        ctx = tf.distribute.get_replica_context()
        n_local = tf.cast(tf.shape(batch["tokens"])[0], tf.float32)
        n_global = ctx.all_reduce(tf.distribute.ReduceOp.SUM, n_local)
        variables = self.variables
        tokens, token_lengths = batch["tokens"], batch["token_lengths"]
        replica_seed = tf.random.experimental.stateless_fold_in(seed, ctx.replica_id_in_sync_group)
        with tf.GradientTape() as tape, dropout_seed(replica_seed):
            if self.ctc_head is None:
                logits, logit_lengths = self.model(batch, training=True)
                outputs = (tf.cast(logits, tf.float32),)
            else:
                logits, logit_lengths, enc = self.model.forward(batch, training=True)
                outputs = (tf.cast(logits, tf.float32), tf.cast(self.ctc_head(enc), tf.float32))
            per_utt = self.loss_fn(outputs[0], tokens, logit_lengths, token_lengths)
            label, infeasible = per_utt, tf.zeros([], tf.float32)
            if self.ctc_head is not None:
                ctc, bad = ctc_loss(outputs[1], logit_lengths, tokens, token_lengths)
                label = label + self.ctc_weight * ctc
                infeasible = tf.reduce_sum(tf.cast(bad, tf.float32))
            total = label
            if teacher is not None:
                total = distill.student_loss(label, outputs, teacher, logit_lengths, token_lengths,
                                             self.distill_mode, self.distill_weight, self.distill_norm,
                                             self.ctc_weight)
            loss = tf.reduce_sum(total) / n_global * scale
            scaled = self.optimizer.get_scaled_loss(loss) if self.scaled else loss
        new = tape.gradient(scaled, variables)
        new = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
               for g, v in zip(new, variables, strict=True)]
        if self.scaled:
            new = self.optimizer.get_unscaled_gradients(new)
        if grads is not None:
            new = [a + b for a, b in zip(grads, new, strict=True)]
        frames = tf.reduce_sum(tf.cast(batch["feature_lengths"], tf.float32))
        return new, loss, outputs, per_utt, tf.cast(tf.size(per_utt), tf.float32), frames, infeasible

    def _reduce(self, grads: list[tf.Tensor], subnet_losses: tf.Tensor, utts: tf.Tensor, frames: tf.Tensor,
                infeasible: tf.Tensor):
        ctx = tf.distribute.get_replica_context()
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        subnet_losses, utts, frames, infeasible = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                                                 [subnet_losses, utts, frames, infeasible])
        finite = tf.logical_and(_all_finite(grads), _all_finite([subnet_losses]))
        norm = tf.linalg.global_norm(grads)
        if self.clip_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, self.clip_norm, use_norm=norm)
        return grads, finite, norm, subnet_losses, utts, frames, infeasible

    def _apply(self, grads: list[tf.Tensor]) -> None:
        pairs = zip(grads, self.variables, strict=True)
        self.optimizer.apply_gradients(pairs, skip_gradients_aggregation=True)

    # -- the step (cross-replica context inside tf.function) ----------------------------------------------
    def _step(self, micro_batches: tuple[Batch, ...], levels: tuple[tf.Tensor, ...], weights: tf.Tensor
              ) -> dict[str, Any]:
        st = self.strategy
        num_subnets, num_micro = len(levels), len(micro_batches)
        total_weight = tf.reduce_sum(weights)
        # with all weights 1 this is exactly the float32 1 / (M * S) of a plain mean
        scales = weights / (total_weight * float(num_micro))
        grads, teachers, subnet_losses = None, [None] * num_micro, []
        utts = frames = infeasible = None
        per_utt_losses, ids = [], []
        fold = tf.random.experimental.stateless_fold_in
        step_seed = tf.stack([tf.constant(self.seed, tf.int64), tf.identity(self.counters.step)])
        for s in range(num_subnets):
            if self.masks is not None:
                self.masks.apply_levels(levels[s])
            loss_s = None
            for i, batch in enumerate(micro_batches):
                teacher = teachers[i] if (s > 0 and self.distill_weight > 0) else None
                seed = fold(fold(step_seed, s), i)
                grads, loss, outputs, per_utt, n, f, bad = st.run(
                    self._forward_backward, args=(batch, grads, teacher, scales[s], seed))
                if s == 0 and self.distill_weight > 0:
                    teachers[i] = outputs
                loss_s = loss if loss_s is None else st.run(tf.add, args=(loss_s, loss))
                if s == 0:
                    utts = n if utts is None else st.run(tf.add, args=(utts, n))
                    frames = f if frames is None else st.run(tf.add, args=(frames, f))
                    infeasible = bad if infeasible is None else st.run(tf.add, args=(infeasible, bad))
                    per_utt_losses.append(per_utt)
                    ids.append(batch["ids"])
            subnet_losses.append(loss_s)
        unweight = total_weight / weights  # S when all weights are 1
        stacked = st.run(lambda *x: tf.stack(x) * unweight, args=tuple(subnet_losses))
        grads, finite, norm, sub, utts, frames, infeasible = st.run(
            self._reduce, args=(grads, stacked, utts, frames, infeasible))
        first = st.experimental_local_results
        ok = first(finite)[0]

        def apply_update():
            st.run(self._apply, args=(grads,))
            return tf.constant(True)

        def apply_scaled(grads):  # the LossScaleOptimizer skips non-finite gradients, updates its scale
            poison = tf.where(ok, tf.constant(0.0), tf.constant(float("nan")))
            self._apply([g + tf.cast(poison, g.dtype) for g in grads])

        if self.scaled:
            st.run(apply_scaled, args=(grads,))
            applied = ok
        else:
            applied = tf.cond(ok, apply_update, lambda: tf.constant(False))
        self.counters.step.assign_add(1)
        self.counters.skipped_nonfinite.assign_add(tf.where(applied, tf.constant(0, tf.int64), 1))
        sub = first(sub)[0]
        return {
            "loss": tf.reduce_mean(sub), "subnet_loss": sub, "grad_norm": first(norm)[0], "applied": applied,
            "utts": first(utts)[0], "frames": first(frames)[0], "ctc_infeasible": first(infeasible)[0],
            "per_utt_loss": [first(p) for p in per_utt_losses], "ids": [first(x) for x in ids],
        }
