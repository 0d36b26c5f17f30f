"""Proof the transducer learns: the tiny preset overfits 10 short synthetic utterances to zero token errors.

Each token id k (2..11) is a "tone": 12 feature frames with energy in mel bins [6k-8, 6k-2) over Gaussian
noise; tokens are separated by 3 noise-only frames. Training: Adam, full batch, RNN-T loss
(omni_tf.losses.rnnt), dropout off. Every ``--eval_every`` steps the same utterances are greedy-decoded
(omni_tf.decoding); training stops at zero token errors. Streaming greedy is checked at the end.

Usage::

    .venv/bin/python benchmarks/overfit.py --max_steps=400 --max_seconds=600
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import app, flags

import omni_tf  # noqa: F401
from omni_tf import decoding
from omni_tf.configs import model as model_configs
from omni_tf.losses.rnnt import rnnt_loss
from omni_tf.model import build_model, count_params

flags.DEFINE_integer("max_steps", 400, "training step limit")
flags.DEFINE_float("max_seconds", 600.0, "wall-clock limit")
flags.DEFINE_integer("eval_every", 25, "greedy-decode every N steps")
flags.DEFINE_integer("num_utts", 10, "utterances")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate")
flags.DEFINE_string("preset", "tiny", "Model preset.")


def make_data(num_utts: int, seed: int = 0) -> dict[str, tf.Tensor]:
    """Synthetic batch: features [N, T, 80], feature_lengths, tokens [N, U] (0-padded), token_lengths."""
    rng = np.random.default_rng(seed)
    feats, labels = [], []
    for _ in range(num_utts):
        tokens = rng.integers(2, 12, size=rng.integers(3, 7)).tolist()
        frames = [rng.normal(0, 0.3, size=(3, 80))]
        for k in tokens:
            seg = rng.normal(0, 0.3, size=(12, 80))
            seg[:, 6 * k - 8 : 6 * k - 2] += 2.0
            frames += [seg, rng.normal(0, 0.3, size=(3, 80))]
        feats.append(np.concatenate(frames).astype(np.float32))
        labels.append(tokens)
    t_max, u_max = max(len(f) for f in feats), max(len(x) for x in labels)
    return {
        "features": tf.constant(np.stack([np.pad(f, [[0, t_max - len(f)], [0, 0]]) for f in feats])),
        "feature_lengths": tf.constant([len(f) for f in feats], tf.int32),
        "tokens": tf.constant([x + [0] * (u_max - len(x)) for x in labels], tf.int32),
        "token_lengths": tf.constant([len(x) for x in labels], tf.int32),
    }


def token_errors(hyps: list[list[int]], batch: dict) -> int:
    """Sum of edit distances between hypotheses and references."""
    total = 0
    for hyp, ref, n in zip(hyps, batch["tokens"].numpy(), batch["token_lengths"].numpy(), strict=True):
        ref = ref[:n].tolist()
        d = np.arange(len(ref) + 1)
        for i, h in enumerate(hyp, 1):
            prev, d[0] = d.copy(), i
            for j, r in enumerate(ref, 1):
                d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (h != r))
        total += int(d[-1])
    return total


def main(argv):
    del argv
    config = model_configs.get_preset(flags.FLAGS.preset)
    config.dropout = 0.0
    model = build_model(config, seed=0)  # the same initial weights every run
    batch = make_data(flags.FLAGS.num_utts)
    optimizer = keras.optimizers.Adam(flags.FLAGS.learning_rate)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits, logit_lengths = model(batch, training=True)
            loss = rnnt_loss(logits, batch["tokens"], logit_lengths, batch["token_lengths"], reduction="mean")
        grads = tape.gradient(loss, model.trainable_variables)
        grads, _ = tf.clip_by_global_norm(grads, 5.0)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    print(
        f"preset={flags.FLAGS.preset} params={count_params(model)} utts={flags.FLAGS.num_utts} "
        f"frames={batch['features'].shape[1]} tokens={int(tf.reduce_sum(batch['token_lengths']))}"
    )
    start, train_seconds, errors = time.time(), 0.0, None
    for i in range(1, flags.FLAGS.max_steps + 1):
        t0 = time.time()
        loss = float(step())
        train_seconds += time.time() - t0
        if i % flags.FLAGS.eval_every == 0 or i == flags.FLAGS.max_steps:
            hyps = decoding.greedy_search(model, batch["features"], batch["feature_lengths"])
            errors = token_errors(hyps, batch)
            print(
                f"step {i} loss {loss:.4f} token_errors {errors} train_s {train_seconds:.1f} "
                f"wall_s {time.time() - start:.1f}",
                flush=True,
            )
            if errors == 0 or time.time() - start > flags.FLAGS.max_seconds:
                break
    streamed = [
        decoding.streaming_greedy_search(model, batch["features"][b : b + 1, : int(n)])
        for b, n in enumerate(batch["feature_lengths"].numpy())
    ]
    print(
        f"RESULT steps={i} token_errors={errors} train_seconds={train_seconds:.1f} "
        f"wall_seconds={time.time() - start:.1f} streaming_equals_offline={streamed == hyps}"
    )


if __name__ == "__main__":
    app.run(main)
