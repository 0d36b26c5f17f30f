"""Trains (or resumes) the transducer supernet (modes dense / pruned / omni; one_device / multi_worker ...).

Usage (from the repository root; ``DATA`` holds train.tsv, dev.tsv, cmvn.json, spm.model):
  python -m recipes.librispeech.train --config=omni_tf/configs/experiment.py:tiny \
      --config.training.max_steps=100 --workdir=/tmp/omni_tiny --data_dir=DATA
  python -m recipes.librispeech.train --config=omni_tf/configs/experiment.py:tiny,smoke \
      --workdir=/tmp/smoke --data_dir=DATA                       # a few steps, small batches
  python -m recipes.librispeech.train --config=omni_tf/configs/experiment.py:tiny \
      --config.training.mode=pruned --config.sparsity.target_sparsity=0.7 \
      --workdir=/tmp/pruned70 --data_dir=DATA
  python -m recipes.librispeech.train --config=omni_tf/configs/experiment.py:tiny --random_features=8 \
      --workdir=/tmp/rand                          # features-only random data (smoke tests, benchmarks)
  TF_CONFIG='{"cluster":{"worker":["127.0.0.1:23456","127.0.0.1:23457"]},
             "task":{"type":"worker","index":0}}' \
      python -m recipes.librispeech.train --config=... --config.training.strategy=multi_worker --workdir=...

Running the same command again resumes from the last checkpoint in ``<workdir>/ckpt`` (step, weights,
optimizer, survival levels, data position); a larger ``max_steps`` / ``max_minutes`` continues it. One process
per workdir (a lock; a second one fails at once naming the holder). A config that differs from the recorded
``config.json`` in a field that changes the result (anything but logging/checkpoint cadence, data paths and
the budget) is refused, naming the fields, unless ``--allow_config_change``. TensorBoard logs:
``<workdir>/tb``; final metrics: ``<workdir>/train_metrics.json``; the resolved config:
``<workdir>/config.json``.
"""
from __future__ import annotations

import json

from absl import app, flags, logging
from ml_collections import config_flags

import omni_tf  # noqa: F401
from omni_tf import fileio
from omni_tf.configs import experiment
from omni_tf.training import loop, sources, workdir

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "omni_tf/configs/experiment.py:tiny", "Experiment config.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Training workdir (checkpoints in <workdir>/ckpt, "
                    "TensorBoard logs, metrics).")
flags.DEFINE_string("data_dir", "", "Prepared directory: <split>.tsv manifests, cmvn.json, "
                    "spm.model (experiment.with_data_dir: a --config.paths.* file given too wins unless the "
                    "program names that file).")
flags.DEFINE_integer("random_features", 0, "If > 0: train on this many random-feature batches per epoch.")
flags.DEFINE_integer("random_batch_size", 4, "Utterances per random-feature batch.")
flags.DEFINE_bool("allow_config_change", False, "Continue a workdir whose checkpoint was trained with a "
                  "config that differs in fields that change the result (refused by default, naming them).")
flags.mark_flags_as_required(["workdir"])


def resolve_config():
    return experiment.with_data_dir(FLAGS.config, FLAGS.data_dir)


def make_source(config):
    if FLAGS.random_features > 0:
        return sources.RandomFeatureSource(config.model.vocab_size, num_batches=FLAGS.random_features,
                                           batch_size=FLAGS.random_batch_size, seed=config.training.seed)
    if not config.paths.manifest_dir and not config.paths.train_manifest:
        raise app.UsageError("give --data_dir (or --config.paths.*) or --random_features")
    return sources.ManifestSource(config)


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    config = resolve_config()
    try:
        lock = workdir.claim(FLAGS.workdir, config, FLAGS.allow_config_change)
    except (fileio.DirLocked, workdir.ConfigChanged) as e:
        raise SystemExit(f"train: {e}") from e
    try:
        metrics = loop.train(config, FLAGS.workdir, make_source(config))
    finally:
        if lock is not None:
            lock.release()
    logging.info("done: %s", json.dumps(metrics))


if __name__ == "__main__":
    app.run(main)
