"""Full-scale recipe: real LibriSpeech (960 h) -> omni supernet (``paper`` preset) -> per-tier TFLite bundles.

The same stages as the synthetic demo (``recipes/end_to_end.py``), on a LibriSpeech tree, with the paper-scale
preset and schedule (``omni_tf/configs/experiment.py:paper,librispeech``: SpecAugment, ~120 epochs, sparsity
set up to 0.9). It is meant for machines with GPUs; one device, ``mirrored`` or ``multi_worker`` is a config
field away (``--config.training.strategy=mirrored``; multi-worker reads TF_CONFIG).

Usage:
  python -m recipes.librispeech.run --librispeech_dir=/data/LibriSpeech --out=/data/omni_paper
  python -m recipes.librispeech.run --librispeech_dir=/data/LibriSpeech --out=/data/omni_paper \
      --config.training.strategy=mirrored --compare_individual
  TF_CONFIG=... python -m recipes.librispeech.run ... --config.training.strategy=multi_worker
  # smoke: any LibriSpeech-layout tree, a few steps (what tests/test_recipes.py does)
  python -m recipes.librispeech.run --librispeech_dir=TREE --out=/tmp/ls --max_steps=4 \
      --config=omni_tf/configs/experiment.py:tiny,smoke

Splits: ``--train_splits`` (default train-clean-100,train-clean-360,train-other-500), ``--dev_split``
(dev-other), ``--test_split`` (test-other); the tree may hold more (each gets a manifest and a report).
Running the same command again reuses finished stages and resumes training from its checkpoint.
"""
from __future__ import annotations

import os

from absl import app, flags
from ml_collections import config_flags

import omni_tf  # noqa: F401
from omni_tf.configs import experiment
from omni_tf.data import prepare
from omni_tf.text.tokenizer import train_from_manifest
from recipes import end_to_end as e2e
from recipes.stages import Stages

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", f"{experiment.__file__}:paper,librispeech", "Experiment config.",
                                lock_config=True)
flags.DEFINE_string("librispeech_dir", None, "LibriSpeech-layout corpus root (split directories below it).")
flags.DEFINE_string("out", None, "Output directory (reused across runs).")
flags.DEFINE_list("train_splits", ["train-clean-100", "train-clean-360", "train-other-500"], "Train splits.")
flags.DEFINE_string("dev_split", "dev-other", "Split for search fitness and int8 calibration.")
flags.DEFINE_string("test_split", "test-other", "Split for WER and TFLite parity.")
flags.DEFINE_integer("max_steps", 0, "Overrides config.training.max_steps when > 0 (both given with "
                     "different values: an error).")
flags.DEFINE_float("max_minutes", 0.0, "Wall-clock budget of the omni training stage (0 = none; "
                   "--config.training.max_minutes alone sets it too).")
e2e.define_flags(flags)
flags.DEFINE_integer("cmvn_max_utterances", 20000,
                     "Train utterances for the global CMVN: the first N (0 = all).")
flags.mark_flags_as_required(["librispeech_dir", "out"])


def make_data(stages: Stages, out: str, config) -> str:
    data_dir = os.path.join(out, "data")
    splits = [*FLAGS.train_splits, FLAGS.dev_split, FLAGS.test_split]
    stages.run("prepare", {"root": os.path.abspath(FLAGS.librispeech_dir), "splits": splits},
               lambda: {s: len(scan.rows) for s, scan in prepare.run(
                   FLAGS.librispeech_dir, data_dir, splits=splits, train_split=FLAGS.train_splits,
                   cmvn_max_utterances=FLAGS.cmvn_max_utterances).items()})
    train_tsv = os.path.join(data_dir, "train.tsv")
    stages.run("train_manifest", {"splits": FLAGS.train_splits}, lambda: _concat_manifests(
        [os.path.join(data_dir, f"{s}.tsv") for s in FLAGS.train_splits], train_tsv))
    stages.run("spm", {"vocab": config.model.vocab_size}, lambda: train_from_manifest(
        train_tsv, os.path.join(data_dir, "spm"), config.model.vocab_size).vocab_size)
    return data_dir


def _concat_manifests(paths: list[str], out_path: str) -> int:
    """One train manifest over several split manifests (same header); returns its row count."""
    from omni_tf.data.librispeech import read_manifest, write_manifest  # noqa: PLC0415

    prepare.check_prepared(paths)
    rows = [r for p in paths for r in read_manifest(p)]
    write_manifest(rows, out_path)
    return len(rows)


def configure(stages: Stages, out: str, data_dir: str):
    del stages, out
    config = experiment.with_data_dir(FLAGS.config, data_dir, train="train.tsv", dev=f"{FLAGS.dev_split}.tsv",
                                      test=f"{FLAGS.test_split}.tsv", source=e2e.PREPARED_DATA)
    max_steps = e2e.flag_or_config(FLAGS, "max_steps", "training.max_steps")
    if max_steps > 0:
        config = e2e.run_config(config, config.training.mode, max_steps, config.training.max_minutes)
    return config, data_dir


def describe(config, train_metrics) -> str:
    return (f"LibriSpeech {FLAGS.librispeech_dir}: train {','.join(FLAGS.train_splits)}, dev "
            f"{FLAGS.dev_split}, test {FLAGS.test_split}; preset `{config.preset}`, variants "
            f"{', '.join(config.variants) or 'none'}; omni training "
            f"{train_metrics.get('step')} steps in {e2e.train_seconds(train_metrics) / 60:.1f} min")


def main(argv: list[str]) -> None:
    del argv
    e2e.run_recipe(FLAGS, make_data, configure, describe)


if __name__ == "__main__":
    app.run(main)
