"""The README main job: synthetic corpus -> SentencePiece -> omni supernet -> tiers -> verified TFLite.

Usage (from the repository root):
  python -m recipes.synthetic.run_demo --out=runs/demo                          # default budget
  python -m recipes.synthetic.run_demo --out=runs/demo --max_minutes=5          # a quick look
  python -m recipes.synthetic.run_demo --out=runs/demo --compare_individual     # + individually pruned runs
  python -m recipes.synthetic.run_demo --out=runs/demo --init=shipped           # start from the shipped model
  python -m recipes.synthetic.run_demo --out=runs/demo_structured --sparsity_granularity=structured
  python -m recipes.synthetic.run_demo --out=runs/demo --tiers=watch:0.9,phone:0.7 \
      --config.model.num_layers=4                                               # any config field

Stages (``<out>/stages/<name>.json`` records each finished one; running the same command again reuses them,
an interrupted stage resumes (corpus: the FLAC files already written; training: its checkpoint), a larger
--max_minutes continues the finished training, and the same run copied to another --out is reused; one
command per --out at a time (a lock)), in order:
  corpus    espeak-ng LibriSpeech-layout corpus in <out>/corpus
  prepare   manifests, bad-input reports, CMVN in <out>/data
  spm       SentencePiece model <out>/data/spm.model
  ood       (--ood_utterances > 0) the out-of-domain test split <out>/data/test_ood.tsv (omni_tf/data/ood.py)
  shipped   (--init=shipped) <out>/data_shipped: the manifests with the shipped model's spm.model / cmvn.json
  train     the omni supernet within --max_minutes (progress line with rate and ETA; the learning rate
            and the sparsity ramp end with the budget, omni_tf/training/progress.py)
  budgets   each tier's byte budget: the size of the uniform config at its sparsity (--tiers name:sparsity)
  search    per-layer levels within each tier's budget (fitness: sparsity.search_fitness on the first
            sparsity.search_dev_utterances dev utterances)
  choose    per tier, the searched config if its greedy dev WER beats the uniform config of the same budget
            (95 % bootstrap interval below 0), else the uniform config; REPORT.md says which and why
  levels    WER of every uniform sparsity level and of the tier configs on the test split
  export    per tier: TFLite (--quantization), parity vs Keras, local LiteRT latency
  train_pruned_<tier>, levels_pruned_<tier>, export_pruned_<tier>
            (--compare_individual) an individually pruned model per tier, same step budget
Then (every run, not a stage) <out>/REPORT.md and <out>/pareto.png are written and the table printed.
"""
from __future__ import annotations

import dataclasses
import os

from absl import app, flags, logging
from ml_collections import config_flags

import omni_tf  # noqa: F401
from omni_tf import fileio
from omni_tf.configs import experiment
from omni_tf.data import ood, prepare, synthetic
from omni_tf.sparsity import structured
from recipes import end_to_end as e2e
from recipes.stages import Stages

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", f"{experiment.__file__}:tiny,demo", "Experiment config.",
                                lock_config=True)
flags.DEFINE_string("out", None, "Output directory (reused across runs).")
flags.DEFINE_float("max_minutes", 20.0, "Wall-clock budget of the omni training stage.")
flags.DEFINE_integer("num_utterances", 0, "Corpus size (0 = the demo config's data.demo_utterances).")
flags.DEFINE_integer("seed", 0, "Corpus seed.")
flags.DEFINE_list("tiers", ["speaker:0.6", "phone:0.75", "wearable:0.9"],
                  "name:sparsity - each tier's budget is the size of a uniform config of that sparsity.")
flags.DEFINE_enum("quantization", "dynamic_int8", list(e2e.BUDGET_METRIC),
                  "Export mode (tflite_export/convert.py), or auto (per tier the smallest file passing "
                  "parity within 1.2x the fastest encode). With --sparse=auto only float32 files are "
                  "sparse-encoded (smaller with sparsity); int8 ones need --sparse=always (XNNPACK off).")
flags.DEFINE_enum("sparse", "auto", ["auto", "never", "always"],
                  "Sparse encoding of the tier files: auto = only where smaller, right and XNNPACK-runnable; "
                  "always = also int8 files that need XNNPACK off (smaller, 3-5x slower).")
flags.DEFINE_integer("parity_utterances", 100, "Test utterances run through Keras and LiteRT per tier.")
flags.DEFINE_integer("eval_utterances", 0, "Test utterances for the level table (0 = all).")
flags.DEFINE_bool("compare_individual", False, "Also train individually pruned models at the tiers.")
flags.DEFINE_integer("search_population", 12, "Per-layer search: population per generation.")
flags.DEFINE_integer("search_generations", 6, "Per-layer search: generations.")
flags.DEFINE_enum("init", "scratch", ["scratch", "shipped"],
                  "scratch: random initial weights; shipped: the supernet and every individually pruned "
                  "model start from the shipped dense model (--pretrained), with its tokenizer, CMVN and "
                  "model config (--config.model.* is then ignored).")
flags.DEFINE_string("pretrained", "demo_tiny", "--init=shipped: a bundle name under "
                    "omni_tf/resources/pretrained/ or a path (recipes/synthetic/pretrain.py writes one).")
flags.DEFINE_integer("ood_utterances", 200, "Utterances of the out-of-domain test split reported beside the "
                     "test split (0 = none).")
flags.DEFINE_enum("sparsity_granularity", None, list(structured.GRANULARITIES),
                  "Sets config.sparsity.granularity: weights (masks over weights / 1xN blocks) or structured "
                  "(whole heads, FFN units, conv channels, decoder units; tiers export as smaller dense "
                  "models). Default: the config's.")
flags.mark_flags_as_required(["out"])


def parse_tiers(items: list[str]) -> dict[str, float]:
    tiers = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not 0.0 < float(value) < 1.0:
            raise app.UsageError(f"--tiers wants name:sparsity with 0 < sparsity < 1, got {item!r}")
        try:
            tiers[fileio.check_name(name, "--tiers name")] = float(value)
        except ValueError as e:
            raise app.UsageError(str(e)) from e
    return tiers


def make_data(stages: Stages, out: str, config) -> str:
    n = FLAGS.num_utterances or config.data.get("demo_utterances", 4000)
    spec = synthetic.CorpusSpec(num_utterances=n, seed=FLAGS.seed)
    data_dir = e2e.make_synthetic_data(stages, out, spec, config.model.vocab_size)
    if FLAGS.ood_utterances > 0:
        ood_spec = ood.OodSpec(num_utterances=FLAGS.ood_utterances, seed=FLAGS.seed, demo=spec)
        ood_dir = os.path.join(out, "corpus_ood")
        stages.run("ood", ood_spec.to_dict(), lambda: {
            **ood.make_ood_split(ood_dir, ood_spec),
            "prepared": len(prepare.run(ood_dir, data_dir, splits=[ood.OOD_SPLIT])[ood.OOD_SPLIT].rows)})
    return data_dir


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.INFO)
    out = os.path.abspath(FLAGS.out)
    tiers = parse_tiers(FLAGS.tiers)
    with fileio.DirLock(out):  # one run per --out (each stage also locks the folder it writes)
        run(out, tiers)


def run(out: str, tiers: dict[str, float]) -> None:
    stages = Stages(out, log=lambda s: print(s, flush=True))
    data_dir = make_data(stages, out, FLAGS.config)
    config = e2e.with_granularity(e2e.with_paths(FLAGS.config, data_dir), FLAGS.sparsity_granularity)
    if FLAGS.init == "shipped":
        config, data_dir = e2e.use_shipped(stages, out, config, data_dir, FLAGS.pretrained)
    opts = e2e.Options.from_flags(tiers, FLAGS)
    ood_manifest = os.path.join(data_dir, f"{ood.OOD_SPLIT}.tsv")
    if FLAGS.ood_utterances > 0:
        opts = dataclasses.replace(opts, extra_tests=((ood.OOD_SPLIT, ood_manifest),))
    rows, level_rows, train_metrics = e2e.run_tiers(stages, out, config, data_dir,
                                                    os.path.join(data_dir, "test.tsv"), opts)
    preamble = (f"Synthetic corpus: {FLAGS.num_utterances or config.data.get('demo_utterances', 4000)} "
                f"utterances (seed {FLAGS.seed}); preset `{config.preset}`; omni training "
                f"{train_metrics.get('step')} steps in {e2e.train_seconds(train_metrics) / 60:.1f} min "
                f"(stopped by {train_metrics.get('stopped_by')}); quantization {FLAGS.quantization}; "
                f"granularity {config.sparsity.granularity}, block {config.sparsity.block}; "
                f"initial weights: {FLAGS.init}"
                f"{' (' + config.training.init_from + ')' if FLAGS.init == 'shipped' else ''}. "
                f"Stages: {sum(stages.timings.values()) / 60:.1f} min.")
    e2e.print_report(rows, out, preamble, level_rows)


if __name__ == "__main__":
    app.run(main)
