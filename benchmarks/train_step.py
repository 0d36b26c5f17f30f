"""Train-step time: dense vs pruned vs omni (1 subnet per step, uniform sampler), same model and batch.

Usage (from the repository root):
  python -m benchmarks.train_step --preset=tiny --batch_size=8 --frames=400 --labels=20 --steps=5 --rounds=5

Each mode gets its own model/optimizer (same seed) and its own traced step; after one warm-up step each,
rounds interleave the modes (``steps`` timed steps per mode per round, host work included: subnet sampling,
the step, reading its outputs). Reports the median step time per mode, ratios to dense, and the consumption
rate in utterances/s and feature frames/s (compare with the input pipeline's delivery rate).
Mask re-ranking (every ``frequency`` steps during the ramp) is not in the timed steps.
"""
from __future__ import annotations

import json
import time

import numpy as np
from absl import app, flags

import omni_tf  # noqa: F401
from omni_tf.configs import experiment
from omni_tf.losses.rnnt import rnnt_loss
from omni_tf.training import loop, sources
from omni_tf.training.step import TrainStep

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "tiny", "Model preset.")
flags.DEFINE_integer("batch_size", 8, "Utterances per batch.")
flags.DEFINE_integer("frames", 400, "Feature frames per utterance (all equal).")
flags.DEFINE_integer("labels", 20, "Labels per utterance.")
flags.DEFINE_integer("steps", 5, "Timed steps per mode per round.")
flags.DEFINE_integer("rounds", 5, "Interleaved rounds.")
MODES = ("dense", "pruned", "omni")


def build(mode: str):
    config = experiment.get_config(FLAGS.preset)
    config.training.mode = mode
    config.sparsity.sampler, config.sparsity.subnets_per_step = "uniform", 1
    config.sparsity.begin_step, config.sparsity.end_step = 0, 10
    strategy = loop.make_strategy(config.training)
    state = loop.TrainState(config, strategy)
    if state.masks is not None:
        state.masks.update_rankings(state.masks.levels)
    fn = TrainStep(state.model, state.optimizer, strategy, rnnt_loss, state.counters, state.masks,
                   clip_norm=config.training.clip_norm)
    src = sources.RandomFeatureSource(config.model.vocab_size, num_batches=1, batch_size=FLAGS.batch_size,
                                      min_frames=FLAGS.frames, max_frames=FLAGS.frames,
                                      max_labels=FLAGS.labels)
    batch = next(iter(strategy.experimental_distribute_dataset(src.dataset(0))))
    sampler = loop.make_level_sampler(config, state.masks)
    return fn, batch, sampler


def run_steps(fn, batch, sampler, start: int, n: int) -> float:
    t0 = time.perf_counter()
    for s in range(start, start + n):
        out = fn([batch], loop.sample_levels(sampler, s, warmup=False, distill=False))
        float(out["loss"])
    return (time.perf_counter() - t0) / n


def main(argv):
    del argv
    built = {m: build(m) for m in MODES}
    for m in MODES:
        run_steps(*built[m], 0, 1)  # trace
    times = {m: [] for m in MODES}
    for r in range(FLAGS.rounds):
        for m in MODES:
            times[m].append(run_steps(*built[m], 1 + r * FLAGS.steps, FLAGS.steps))
    med = {m: float(np.median(times[m])) for m in MODES}
    result = {m: {"median_step_s": med[m], "ratio_to_dense": med[m] / med["dense"],
                  "utts_per_s": FLAGS.batch_size / med[m],
                  "frames_per_s": FLAGS.batch_size * FLAGS.frames / med[m]}
              for m in MODES}
    print(json.dumps({"preset": FLAGS.preset, "batch_size": FLAGS.batch_size, "frames": FLAGS.frames,
                      "labels": FLAGS.labels, "steps": FLAGS.steps, "rounds": FLAGS.rounds, "result": result},
                     indent=1))


if __name__ == "__main__":
    app.run(main)
