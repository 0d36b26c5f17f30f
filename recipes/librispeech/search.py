"""Per-tier evolutionary search of per-kernel sparsity levels under size budgets, on a trained supernet.

Usage (from the repository root):
  python -m recipes.librispeech.search --config=omni_tf/configs/experiment.py:tiny \
      --workdir=/tmp/omni_tiny --data_dir=DATA --tiers=small:0.35,mid:0.5,large:0.7 \
      --metric=int8_sparse_bytes --fitness=loss --max_batches=8
  python -m recipes.librispeech.search ... --fitness=wer --population=16 --generations=10

``--tiers`` gives budgets as fractions of the dense int8 model's bytes (``size.py``); ``--budgets`` gives
absolute budgets in ``--metric`` units instead (e.g. ``--metric=nonzero_params --budgets=a:500000``).
Writes ``<out_dir>/tier_<name>.json`` (the config, for export/evaluate) and ``search.json`` / ``search.md``
(best vs uniform config of the same budget). Default ``out_dir``: ``<workdir>/search``.
"""
from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

import omni_tf  # noqa: F401
from omni_tf.sparsity import search
from omni_tf.training import evaluation, sources

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "omni_tf/configs/experiment.py:tiny", "Experiment config.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Training workdir (checkpoints in <workdir>/ckpt).")
flags.DEFINE_string("data_dir", "", "Prepared directory (dev.tsv, cmvn.json, spm.model).")
flags.DEFINE_list("tiers", ["small:0.35", "mid:0.5", "large:0.7"], "name:fraction of dense int8 bytes.")
flags.DEFINE_list("budgets", [], "name:absolute budget in --metric units (overrides --tiers).")
flags.DEFINE_string("metric", "int8_sparse_bytes", "size.py metric the budgets are in.")
flags.DEFINE_enum("fitness", "loss", ["loss", "wer"], "Dev-subset RNN-T loss (fast) or greedy WER.")
flags.DEFINE_integer("max_batches", 8, "Dev batches used for the fitness (0 = all).")
flags.DEFINE_integer("population", 16, "Search population.")
flags.DEFINE_integer("generations", 8, "Search generations.")
flags.DEFINE_string("out_dir", "", "Output directory (default <workdir>/search).")
flags.mark_flags_as_required(["workdir"])


def parse_pairs(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep:
            raise app.UsageError(f"expected name:value, got {item!r}")
        out[name] = float(value)
    return out


def main(argv):
    del argv
    config = FLAGS.config
    with config.unlocked():
        config.paths.manifest_dir = FLAGS.data_dir or config.paths.manifest_dir
    source = sources.ManifestSource(config, split="dev", training=False)
    model, masks = evaluation.restore_supernet(config, FLAGS.workdir)
    batches = evaluation.load_batches(source.dataset(0), FLAGS.max_batches)
    sizes = evaluation.size_model_of(model, masks)
    budgets = parse_pairs(FLAGS.budgets) or search.budgets_from_fractions(sizes, parse_pairs(FLAGS.tiers))
    results = evaluation.search_tiers(
        model, masks, batches, budgets, FLAGS.metric, FLAGS.fitness, source.tokenizer,
        FLAGS.out_dir or os.path.join(FLAGS.workdir, "search"), population=FLAGS.population,
        generations=FLAGS.generations, seed=config.training.seed)
    for tier, r in results.items():
        logging.info("%s: size %.0f fitness %.4f (uniform: size %.0f fitness %.4f)", tier, r["size"],
                     r["fitness"], r["uniform_size"], r["uniform_fitness"])


if __name__ == "__main__":
    app.run(main)
