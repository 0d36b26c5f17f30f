r"""Train-step time: dense vs pruned vs omni (1 subnet per step, uniform sampler), same model and batch;
with ``--breakdown``: where one step's time goes and the fraction of this machine's fp32 matmul rate it uses.

Usage (from the repository root):
  python -m benchmarks.train_step --preset=tiny --batch_size=8 --frames=400 --labels=20 --steps=5 --rounds=5
  nice python -m benchmarks.train_step --breakdown --threads=2 --config_arg=tiny,demo \
      --data_dir=runs/demo/data
  (``--data_dir``: real demo batches; without it random features of --batch_size x --frames)

``--breakdown`` (``benchmarks/train_step_profile.py``): input, encoder fwd+bwd, predictor+joiner+loss
fwd+bwd, mask writes and re-ranking, the whole step and the rest; matmul/conv FLOPs of one subnet's forward +
backward from the traced graph; the step's FLOP/s over an fp32 matmul's FLOP/s measured in the same run with
the same ``--threads``.

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
import tensorflow as tf
from absl import app, flags

import omni_tf  # noqa: F401
from benchmarks import train_step_profile as profile
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
flags.DEFINE_bool("breakdown", False, "Profile one mode's step (--mode) instead of comparing the modes.")
flags.DEFINE_integer("threads", 0, "intra/inter-op threads (0 = TensorFlow's default).")
flags.DEFINE_string("config_arg", "", "--breakdown: experiment config (e.g. tiny,demo; default --preset).")
flags.DEFINE_enum("mode", "omni", ["dense", "pruned", "omni"], "--breakdown: training mode.")
flags.DEFINE_string("data_dir", "", "--breakdown: prepared data dir (train.tsv, spm.model, cmvn.json) for "
                    "real batches; empty = random features of --batch_size x --frames.")
flags.DEFINE_integer("repeats", 10, "--breakdown: timed calls per part (median).")
flags.DEFINE_integer("matmul_n", 1024, "--breakdown: size of the reference fp32 square matmul.")
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
    return fn, batch, state.sampler


def run_steps(fn, batch, sampler, start: int, n: int) -> float:
    t0 = time.perf_counter()
    for s in range(start, start + n):
        out = fn([batch], *loop.sample_levels(sampler, s, warmup=False, distill=False))
        float(out["loss"])
    return (time.perf_counter() - t0) / n


def run_breakdown() -> dict:
    config = experiment.get_config(FLAGS.config_arg or FLAGS.preset)
    config.training.mode = FLAGS.mode
    config.sparsity.begin_step, config.sparsity.end_step = 0, 10
    if FLAGS.data_dir:
        config = experiment.with_data_dir(config, FLAGS.data_dir)
        source = sources.ManifestSource(config)
    else:
        source = sources.RandomFeatureSource(config.model.vocab_size, num_batches=1000,
                                             batch_size=FLAGS.batch_size, min_frames=FLAGS.frames,
                                             max_frames=FLAGS.frames, max_labels=FLAGS.labels)
    strategy = loop.make_strategy(config.training)
    state = loop.TrainState(config, strategy)
    if state.masks is not None:
        state.masks.update_rankings(state.masks.levels)
    fn = TrainStep(state.model, state.optimizer, strategy, rnnt_loss, state.counters, state.masks,
                   clip_norm=config.training.clip_norm, ctc_head=state.ctc_head, ctc_weight=state.ctc_weight,
                   extra_variables=state.level_norm_variables)
    it = iter(source.dataset(0))
    batch = {k: tf.constant(v) for k, v in next(it).items()}
    dist = next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch))))
    levels, weights = loop.sample_levels(state.sampler, 1, warmup=False, distill=False)
    result = profile.breakdown(state, lambda: fn([dist], levels, weights), batch, levels, lambda: next(it),
                               rnnt_loss, FLAGS.repeats)
    rate = profile.matmul_rate(FLAGS.matmul_n)
    result.update({"matmul_flops_per_s": rate, "fraction_of_matmul_rate": result["step_flops_per_s"] / rate,
                   "batch_shape": {k: list(v.shape) for k, v in batch.items()}, "mode": FLAGS.mode,
                   "config": FLAGS.config_arg or FLAGS.preset, "threads": FLAGS.threads})
    return result


def main(argv):
    del argv
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    if FLAGS.breakdown:
        print(json.dumps(run_breakdown(), indent=1))
        return
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
