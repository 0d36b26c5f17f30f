"""Per-tier evolutionary search of per-kernel sparsity levels under size budgets, on a trained supernet.

Usage (from the repository root):
  python -m recipes.librispeech.search --config=omni_tf/configs/experiment.py:tiny \
      --workdir=/tmp/omni_tiny --data_dir=DATA --tiers=phone=sparsity:0.75,watch=level:6 --max_batches=8
  python -m recipes.librispeech.search ... --config.sparsity.search_metric=int8_sparse_bytes \
      --tiers=small=bytes:0.35,mid=bytes:0.5
  python -m recipes.librispeech.search ... --fitness=wer --config.sparsity.search_population=16 \
      --config.sparsity.search_generations=10
  python -m recipes.librispeech.search ... --config.sparsity.search_metric=nonzero_params --budgets=a:500000

``--tiers`` (the syntax of every recipe, ``recipes/tier_flags.py``): ``bytes:F`` = F x the dense int8 model's
bytes, ``sparsity:S`` = the size of a uniform config of sparsity S, ``level:K`` = the size of uniform level K,
each in the size metric of ``--quantization`` (``config.sparsity.search_metric``, "auto": the export mode's);
(``bytes:`` needs a bytes metric, e.g. ``--config.sparsity.search_metric=int8_sparse_bytes``); ``--budgets``
gives absolute budgets in that metric's units instead. Population, generations, mutation and seed are
``config.sparsity.search_*``. Writes ``<out_dir>/tier_<name>.json`` (the config, for export/evaluate) and
``search.json`` / ``search.md`` (best vs uniform config of the same budget). Default ``out_dir``:
``<workdir>/search``.
"""
from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

import omni_tf  # noqa: F401
from omni_tf.configs import experiment
from omni_tf.supernet import BUDGET_METRIC, Supernet
from omni_tf.training import evaluation, sources
from recipes.tier_flags import define_tiers_flag

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "omni_tf/configs/experiment.py:tiny", "Experiment config.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Training workdir (checkpoints in <workdir>/ckpt, "
                    "TensorBoard logs, metrics).")
flags.DEFINE_string("data_dir", "", "Prepared directory: <split>.tsv manifests, cmvn.json, "
                    "spm.model (experiment.with_data_dir: a --config.paths.* file given too wins unless the "
                    "program names that file).")
define_tiers_flag(["speaker=sparsity:0.6", "phone=sparsity:0.75", "wearable=sparsity:0.9"], "Tier budgets.")
flags.DEFINE_list("budgets", [], "name:size budget,... in the size metric of --quantization "
                  "(sparsity.search_metric); overrides --tiers.")
flags.DEFINE_enum("quantization", "dynamic_int8", list(BUDGET_METRIC),
                  "Export mode the budgets are for (its size metric when sparsity.search_metric=auto).")
flags.DEFINE_enum("fitness", "loss", ["loss", "wer"], "Dev-subset RNN-T loss (fast) or greedy WER.")
flags.DEFINE_integer("max_batches", 8, "Only the first N batches of the split are read (0 = all).")
flags.DEFINE_string("out_dir", "", "Output directory (default <workdir>/search).")
flags.mark_flags_as_required(["workdir"])


def parse_budgets(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep:
            raise app.UsageError(f"--budgets wants name:value, got {item!r}")
        out[name] = float(value)
    return out


def main(argv):
    del argv
    config = experiment.with_data_dir(FLAGS.config, FLAGS.data_dir)
    source = sources.ManifestSource(config, split="dev", training=False)
    supernet = Supernet(config)
    supernet.restore(FLAGS.workdir)
    metric = supernet.budget_metric(FLAGS.quantization)
    budgets = parse_budgets(FLAGS.budgets) or {t: supernet.budget(s, metric) for t, s in FLAGS.tiers.items()}
    batches = evaluation.load_batches(source.dataset(0), FLAGS.max_batches)
    results = evaluation.search_tiers(supernet, batches, budgets, metric, FLAGS.fitness, source.tokenizer,
                                      FLAGS.out_dir or os.path.join(FLAGS.workdir, "search"))
    for tier, r in results.items():
        logging.info("%s: %s %.0f fitness %.4f (uniform: %.0f fitness %.4f)", tier, metric, r["size"],
                     r["fitness"], r["uniform_size"], r["uniform_fitness"])


if __name__ == "__main__":
    app.run(main)
