"""WER / CER of a trained supernet on a split: every uniform level, plus per-kernel configs (JSON files).

Usage (from the repository root):
  python -m recipes.librispeech.evaluate --config=omni_tf/configs/experiment.py:tiny \
      --workdir=/tmp/omni_tiny --data_dir=DATA --split=dev
  python -m recipes.librispeech.evaluate --config=omni_tf/configs/experiment.py:tiny \
      --workdir=/tmp/omni_tiny --data_dir=DATA --split=test --configs=/tmp/omni_tiny/search/tier_mid.json \
      --beam=4 --max_batches=20

Use the same ``--config`` overrides as for training (model size, levels). Writes
``<out_dir>/eval_<split>.json`` and ``.md`` (default ``out_dir``: ``<workdir>/eval``).
"""
from __future__ import annotations

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

import omni_tf  # noqa: F401
from omni_tf.configs import experiment
from omni_tf.supernet import Supernet
from omni_tf.training import evaluation, sources

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "omni_tf/configs/experiment.py:tiny", "Experiment config.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Training workdir (checkpoints in <workdir>/ckpt, "
                    "TensorBoard logs, metrics).")
flags.DEFINE_string("data_dir", "", "Prepared directory: <split>.tsv manifests, cmvn.json, "
                    "spm.model (experiment.with_data_dir: a --config.paths.* file given too wins unless the "
                    "program names that file).")
flags.DEFINE_string("split", "dev", "Split to evaluate: dev / test (config.paths.<split>_manifest, default "
                    "<data_dir>/<split>.tsv) or any <data_dir>/<split>.tsv (e.g. test-other).")
flags.DEFINE_list("configs", [], "JSON files of {kernel: level}; each adds a row named after the file.")
flags.DEFINE_integer("beam", 0, "Beam width; 0 = greedy.")
flags.DEFINE_integer("max_batches", 0, "Only the first N batches of the split are read (0 = all).")
flags.DEFINE_string("out_dir", "", "Output directory (default <workdir>/eval).")
flags.mark_flags_as_required(["workdir"])


def load_configs(paths: list[str]) -> dict[str, dict[str, int]]:
    out = {}
    for p in paths:
        with open(p) as f:
            out[os.path.splitext(os.path.basename(p))[0]] = {k: int(v) for k, v in json.load(f).items()}
    return out


def main(argv):
    del argv
    config = experiment.with_data_dir(FLAGS.config, FLAGS.data_dir)
    source = sources.ManifestSource(config, split=FLAGS.split, training=False)
    supernet = Supernet(config)
    supernet.restore(FLAGS.workdir)
    batches = evaluation.load_batches(source.dataset(0), FLAGS.max_batches)
    rows = evaluation.evaluate_levels(supernet, batches, source.tokenizer, load_configs(FLAGS.configs),
                                      FLAGS.beam, FLAGS.out_dir or os.path.join(FLAGS.workdir, "eval"),
                                      FLAGS.split)
    for r in rows:
        logging.info("%-16s WER %.4f CER %.4f nonzero %d", r["name"], r["wer"], r["cer"], r["nonzero_params"])


if __name__ == "__main__":
    app.run(main)
