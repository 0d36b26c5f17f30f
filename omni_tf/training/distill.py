"""In-place distillation of the sparse subnets from the dense one (the supernet's own teacher).

Dimension key: B batch, T' encoder frames, U labels, V vocab.

Where the ideas come from (our summary):
- Slimmable / universally slimmable networks (Yu & Huang 2019, "Universally Slimmable Networks and Improved
  Training Techniques", Sec. 3.3 "inplace distillation"): in each step the largest network is trained on the
  labels and its predictions, computed in the same step, are the targets of the smaller networks; the teacher
  costs no extra forward pass and improves as training goes on.
- BigNAS (Yu et al. 2020, Sec. 3.1): sandwich rule + in-place distillation; the children are trained *only*
  on the biggest child's soft predictions, not on the labels.
- AlphaNet (Wang et al. 2021): in-place distillation with a KL that is too forgiving of students that are
  over- or under-confident; they propose an alpha-divergence instead. Not implemented here (KL only).

The teacher is row 0 of the step's level matrix (the dense subnet), under stop-gradient: students cannot
move it. ``training.distill_mode`` picks the student's loss from the label loss ``L`` (RNN-T, plus
``ctc_weight`` x CTC) and the distillation term ``D`` (joiner KL, plus ``ctc_weight`` x CTC-head KL):

- ``add``: ``L + w D`` (the historical behaviour of ``distill_weight``),
- ``replace``: ``w D`` (BigNAS: students learn from the teacher only),
- ``mix``: ``(1 - w) L + w D`` with ``0 < w <= 1``.

``D``'s scale (``sparsity.distill_norm``): ``nodes`` averages the per-node KL over the valid RNN-T lattice
nodes (``t < T'_b``, ``u <= U_b``) or CTC frames; ``sequence`` multiplies that mean by the number of
emissions of one alignment (``T'_b + U_b``; ``T'_b`` for the CTC head), which puts ``D`` on the scale of a
sequence loss like ``L`` (a per-node mean is ~50x smaller than ``L`` on the demo's utterances).
"""
from __future__ import annotations

import tensorflow as tf

DISTILL_MODES = ("add", "replace", "mix")
DISTILL_NORMS = ("nodes", "sequence")


def _kl(student_logits: tf.Tensor, teacher_logits: tf.Tensor) -> tf.Tensor:
    student = tf.nn.log_softmax(tf.cast(student_logits, tf.float32), axis=-1)
    teacher = tf.nn.log_softmax(tf.stop_gradient(tf.cast(teacher_logits, tf.float32)), axis=-1)
    return tf.reduce_sum(tf.exp(teacher) * (teacher - student), axis=-1)


def distillation_kl(student_logits: tf.Tensor, teacher_logits: tf.Tensor, logit_lengths: tf.Tensor,
                    token_lengths: tf.Tensor) -> tf.Tensor:
    """Per-utterance ``KL(teacher || student)`` of the joiner distributions, averaged over the valid lattice
    nodes (``t < T'_b``, ``u <= U_b``). Logits ``[B, T', U+1, V]`` -> ``[B]``; teacher under stop-gradient."""
    kl = _kl(student_logits, teacher_logits)  # [B, T', U+1]
    t_valid = tf.sequence_mask(logit_lengths, tf.shape(kl)[1], tf.float32)
    u_valid = tf.sequence_mask(token_lengths + 1, tf.shape(kl)[2], tf.float32)
    valid = t_valid[:, :, None] * u_valid[:, None, :]
    return tf.reduce_sum(kl * valid, axis=[1, 2]) / tf.maximum(tf.reduce_sum(valid, axis=[1, 2]), 1.0)


def frame_kl(student_logits: tf.Tensor, teacher_logits: tf.Tensor, logit_lengths: tf.Tensor) -> tf.Tensor:
    """Per-utterance ``KL(teacher || student)`` of per-frame distributions (the CTC head), averaged over the
    valid frames ``t < T'_b``. Logits ``[B, T', V]`` -> ``[B]``; teacher under stop-gradient."""
    kl = _kl(student_logits, teacher_logits)  # [B, T']
    valid = tf.sequence_mask(logit_lengths, tf.shape(kl)[1], tf.float32)
    return tf.reduce_sum(kl * valid, axis=1) / tf.maximum(tf.reduce_sum(valid, axis=1), 1.0)


def check(mode: str, weight: float, norm: str) -> None:
    """Raises ValueError for an unknown mode/norm or a weight outside its mode's range."""
    if mode not in DISTILL_MODES:
        raise ValueError(f"distill_mode must be one of {DISTILL_MODES}, got {mode!r}")
    if norm not in DISTILL_NORMS:
        raise ValueError(f"distill_norm must be one of {DISTILL_NORMS}, got {norm!r}")
    if weight < 0 or (mode == "mix" and weight > 1):
        raise ValueError(f"distill_weight {weight} out of range for mode {mode!r} "
                         "(mix wants 0..1, else >= 0)")


def loss_weights(mode: str, weight: float) -> tuple[float, float]:
    """(label-loss weight, distillation weight) of a student for ``mode`` and ``weight`` (see module)."""
    if mode == "add":
        return 1.0, float(weight)
    if mode == "replace":
        return 0.0, float(weight)
    if mode == "mix":
        return 1.0 - float(weight), float(weight)
    raise ValueError(f"distill_mode must be one of {DISTILL_MODES}, got {mode!r}")


def alignment_scale(norm: str, logit_lengths: tf.Tensor, token_lengths: tf.Tensor | None) -> tf.Tensor:
    """Multiplier ``[B]`` of a per-node mean KL: 1 (``nodes``) or ``T'_b + U_b`` (``sequence``; ``T'_b``
    when ``token_lengths`` is None, for the CTC head)."""
    frames = tf.cast(logit_lengths, tf.float32)
    if norm == "nodes":
        return tf.ones_like(frames)
    if norm == "sequence":
        return frames if token_lengths is None else frames + tf.cast(token_lengths, tf.float32)
    raise ValueError(f"distill_norm must be one of {DISTILL_NORMS}, got {norm!r}")


def student_loss(label: tf.Tensor, outputs: tuple[tf.Tensor, ...], teacher: tuple[tf.Tensor, ...],
                 logit_lengths: tf.Tensor, token_lengths: tf.Tensor, mode: str, weight: float,
                 norm: str = "nodes", ctc_weight: float = 0.0) -> tf.Tensor:
    """Per-utterance loss ``[B]`` of a sparse student.

    Args: ``label [B]`` the student's label loss (RNN-T + ctc_weight x CTC); ``outputs`` / ``teacher``:
    (joiner logits ``[B, T', U+1, V]``, optional CTC logits ``[B, T', V]``) of the student / dense teacher;
    ``logit_lengths`` / ``token_lengths`` ``[B]``; ``mode``, ``weight``, ``norm`` as in the module docstring.
    The CTC-head KL enters with ``ctc_weight`` when both tuples carry CTC logits.
    """
    label_w, kd_w = loss_weights(mode, weight)
    kd = distillation_kl(outputs[0], teacher[0], logit_lengths, token_lengths)
    kd = kd * alignment_scale(norm, logit_lengths, token_lengths)
    if len(outputs) > 1 and len(teacher) > 1:
        frame = frame_kl(outputs[1], teacher[1], logit_lengths)
        kd = kd + ctc_weight * frame * alignment_scale(norm, logit_lengths, None)
    return label_w * label + kd_w * kd
