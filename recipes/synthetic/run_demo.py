"""The README main job: synthetic corpus -> SentencePiece -> omni supernet -> tiers -> verified TFLite.

Usage (from the repository root):
  python -m recipes.synthetic.run_demo --out=runs/demo                          # default budget
  python -m recipes.synthetic.run_demo --out=runs/demo --max_minutes=5          # a quick look
  python -m recipes.synthetic.run_demo --out=runs/demo --compare_individual     # + individually pruned runs
  python -m recipes.synthetic.run_demo --out=runs/demo --init=scratch --max_minutes=20  # from random weights
  python -m recipes.synthetic.run_demo --out=runs/demo_structured --sparsity_granularity=structured
  python -m recipes.synthetic.run_demo --out=runs/demo --tiers=watch=sparsity:0.9,phone=level:4 \
      --config.model.num_layers=4                                               # any config field

Flags besides those above: --num_utterances (8000) and --seed (0) of the corpus; --ood_utterances (200; 0 =
no out-of-domain split); --pretrained (--init=shipped: a bundle name under omni_tf/resources/pretrained/ or a
path; demo_tiny_extra, see docs/RESULTS.md 2d); --quantization (dynamic_int8) and --sparse (auto) of the
export; --parity_utterances (100) and --eval_utterances (0 = all) of the parity check and the level table.

Stages (``<out>/stages/<name>.json`` records each finished one; running the same command again reuses them,
an interrupted stage resumes (corpus: the FLAC files already written; training: its checkpoint), a larger
--max_minutes continues the finished training, and the same run copied to another --out is reused; one
command per --out at a time (a lock)), in order:
  corpus    espeak-ng LibriSpeech-layout corpus in <out>/corpus
  prepare   manifests, bad-input reports, CMVN in <out>/data
  spm       SentencePiece model <out>/data/spm.model
  ood       (--ood_utterances > 0) the out-of-domain test split <out>/data/test_ood.tsv (omni_tf/data/ood.py)
  shipped   (--init=shipped) <out>/data_shipped: the manifests with the shipped model's spm.model / cmvn.json;
            the config gets the shipped model's config and the `finetune` variant (no dense warm-up,
            sparsity ramp over 2-50 % of max_steps, then fine-tuning at frozen masks; peak learning rate
            2e-3 after 50 warm-up steps) and the `tier_sandwich` variant (dense + every tier's subnet each
            step, the sparse ones distilled from the dense one; omni_tf/configs/experiment.py), unless
            --config names them already; a field given as --config.* keeps its value, the others of the
            variant still apply: --config.sparsity.sampler=uniform alone trains the dense teacher beside
            one uniform level each step (distillation kept); add --config.sparsity.distill_weight=0 for
            one level per step. --init=scratch samples one uniform level per step (the demo variant)
  train     the omni supernet within --max_minutes (progress line with rate and ETA; the learning rate
            and the sparsity ramp end with the budget, omni_tf/training/progress.py); its level set is
            config.sparsity.levels plus every --tiers sparsity (a sparsity:S tier is a trained level);
            with --init=shipped's tiers sampler a bytes:F tier needs --config.sparsity.train_levels
            (else an error naming the tier)
  budgets   each tier's budget in the size metric of --quantization (config.sparsity.search_metric):
            --tiers name=sparsity:S (a uniform config of sparsity S), name=bytes:F (F x the dense int8
            bytes) or name=level:K (uniform level K)
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

import os

from absl import app, flags
from ml_collections import config_flags

import omni_tf  # noqa: F401
from omni_tf.configs import experiment
from omni_tf.data import ood, prepare, synthetic
from recipes import end_to_end as e2e
from recipes.stages import Stages

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", f"{experiment.__file__}:tiny,demo", "Experiment config.",
                                lock_config=True)
flags.DEFINE_string("out", None, "Output directory (reused across runs).")
flags.DEFINE_float("max_minutes", 10.0, "Wall-clock budget of the omni training stage (0 = none; "
                   "--config.training.max_minutes alone sets it too).")
flags.DEFINE_integer("num_utterances", 8000, "Size of the generated corpus: utterances over all splits.")
flags.DEFINE_integer("seed", 0, "Corpus seed.")
e2e.define_flags(flags)
flags.DEFINE_enum("init", "shipped", ["scratch", "shipped"],
                  "scratch: random initial weights; shipped: the supernet and every individually pruned "
                  "model start from the shipped dense model (--pretrained), with its tokenizer, CMVN and "
                  "model config (--config.model.* is then ignored), and the config gets the finetune "
                  "variant (no dense warm-up, sparsity ramp over 2-50 % of max_steps, then fine-tuning "
                  "at frozen masks, peak learning rate 2e-3 after 50 warm-up steps) and the tier_sandwich "
                  "variant (dense + every tier each step, tiers distilled from the dense subnet); "
                  "--config.* fields given explicitly keep their values, the variants' others still "
                  "apply (--config.sparsity.sampler=uniform --config.sparsity.distill_weight=0 for one "
                  "level per step).")
flags.DEFINE_string("pretrained", "demo_tiny_extra", "--init=shipped: a bundle name under "
                    "omni_tf/resources/pretrained/ or a path (recipes/synthetic/pretrain.py writes one).")
flags.DEFINE_integer("ood_utterances", 200, "Utterances of the out-of-domain test split reported beside the "
                     "test split (0 = none).")
flags.mark_flags_as_required(["out"])


def make_data(stages: Stages, out: str, config) -> str:
    spec = synthetic.CorpusSpec(num_utterances=FLAGS.num_utterances, seed=FLAGS.seed)
    data_dir = e2e.make_synthetic_data(stages, out, spec, config.model.vocab_size)
    if FLAGS.ood_utterances > 0:
        ood_spec = ood.OodSpec(num_utterances=FLAGS.ood_utterances, seed=FLAGS.seed, demo=spec)
        ood_dir = os.path.join(out, "corpus_ood")
        stages.run("ood", ood_spec.to_dict(), lambda: {
            **ood.make_ood_split(ood_dir, ood_spec),
            "prepared": len(prepare.run(ood_dir, data_dir, splits=[ood.OOD_SPLIT],
                                    add_splits=True)[ood.OOD_SPLIT].rows)})
    return data_dir


def configure(stages: Stages, out: str, data_dir: str):
    return e2e.initial_config(stages, out, FLAGS.config, data_dir, FLAGS.init, FLAGS.pretrained,
                              e2e.config_overrides(FLAGS))


def describe(config, train_metrics) -> str:
    return (f"Synthetic corpus: {FLAGS.num_utterances} utterances (seed {FLAGS.seed}); preset "
            f"`{config.preset}`, variants {', '.join(config.variants) or 'none'}; init {FLAGS.init}; omni "
            f"training {train_metrics.get('step')} steps in {e2e.train_seconds(train_metrics) / 60:.1f} min "
            f"(stopped by {train_metrics.get('stopped_by')})")


def main(argv: list[str]) -> None:
    del argv
    e2e.run_recipe(FLAGS, make_data, configure, describe,
                   extra_tests=(ood.OOD_SPLIT,) if FLAGS.ood_utterances > 0 else ())


if __name__ == "__main__":
    app.run(main)
