r"""Pretrain the dense model that ``run_demo --init=shipped`` starts from, and write its shipped bundle.

Usage (from the repository root; rerun the same command to continue training: it resumes from the
checkpoint in --out and stops at --max_minutes or training.max_steps):
  nice python -m recipes.synthetic.pretrain --out=runs/pretrain --name=my_dense --max_minutes=120
  nice python -m recipes.synthetic.pretrain --out=runs/pretrain --name=my_dense --max_minutes=120 \
      --config.training.max_steps=60000 --num_utterances=40000
  python -m recipes.synthetic.pretrain --out=/tmp/pt --name=smoke --num_utterances=60 \
      --config.training.max_steps=3 --eval_utterances=8 --bundle_dir=/tmp/pt/bundle       # smoke run
  # continue the shipped demo_tiny on a corpus whose train split also holds the extra sentence pool
  # (demo_tiny_extra's command: docs/RESULTS.md 2d):
  nice python -m recipes.synthetic.pretrain --out=runs/pretrain_extra --pretrained=demo_tiny --extra_text \
      --name=my_extra --max_minutes=60 --config.training.max_steps=100000

--name (required) is the bundle's name: its bundle.json ``name`` and, without --bundle_dir, its folder
``omni_tf/resources/pretrained/<name>``. The bundle is not written over an existing folder (a shipped bundle,
another run's) unless --overwrite: the run stops before training, naming the folder. A rerun of the same
command replaces the bundle it wrote itself (``<out>/bundle_target.json`` records the folder).

--extra_text: ``CorpusSpec(extra_train_text=True)``: the train split's sentences are drawn from the demo-train
sentence pool plus ``omni_tf/data/resources/extra_sentences.txt.gz`` (full fortune files and WordNet 3.0
usage examples, 51k sentences; ``omni_tf/data/text_source.py``), minus the demo's dev/test sentences and any
sentence the OOD split can contain; the corpus's own dev/test splits (the bundle's WER) are unchanged.

--pretrained=<bundle name or dir>: continue training that bundle (a name under
``omni_tf/resources/pretrained/`` or a path, as ``run_demo --pretrained`` and ``benchmarks/omni_vs_pruned.py
--pretrained`` read it; dense, ``training.mode=dense``) instead of starting from scratch: its model config
and weights (``training.init_from``; a resumed run's checkpoint wins), and its ``spm.model`` / ``cmvn.json``
beside this corpus's manifests in ``<out>/data_shipped`` (no new
SentencePiece model; ``recipes.end_to_end.shipped_data``). The schedule is the command line's
``--config.training.*`` (the ``finetune`` variant of ``run_demo --init=shipped`` is not applied; the step
count starts at 0). The new bundle.json names the parent (``parent``: name, path, command, cpu_hours, steps,
its own parent; the path is ``pretrained.bundle_reference``'s, no path of this machine), ``cpu_hours`` is the
parent's plus this run's and ``total_steps`` the steps of the chain. The new bundle must go elsewhere than the
parent (--name / --bundle_dir). bundle.json's ``command`` holds the command line with --out, --bundle_dir and
--config.paths.* values replaced by placeholders and --pretrained's by its ``bundle_reference``.

Disjointness from the demo's evaluation data: the corpus is ``CorpusSpec(within_train_of=--demo_seed)``
(``omni_tf/data/synthetic.py``): its speakers and sentences are drawn only from the *train* pools of the
demo corpus made with that seed (``run_demo --seed``, default split fractions), so no demo dev/test speaker
or sentence is heard in pretraining (tests/test_ood.py checks it). The pretraining corpus's own dev/test
splits are carved out of those train pools and give the WER written into the bundle.

Stages (``<out>/stages``): corpus, prepare, spm (with --pretrained: shipped instead); then training
(``training.mode=dense``; not a cached stage: every run continues from ``<out>/train``'s checkpoint, and its
CPU time is appended to ``<out>/pretrain_runs.json``), evaluation of the dense model on the pretraining test
split, and the bundle (``omni_tf/training/pretrained.py``: float16 weights, spm.model, cmvn.json, config.json,
bundle.json with the exact command, the CPU-hours summed over runs, the steps and the WER) in --bundle_dir.
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

import omni_tf  # noqa: F401
from omni_tf import fileio
from omni_tf.configs import experiment
from omni_tf.data import synthetic
from omni_tf.training import pretrained, sources
from recipes import end_to_end as e2e
from recipes.stages import Stages

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", f"{experiment.__file__}:tiny,demo", "Experiment config "
                                "(training.mode is forced to dense).", lock_config=True)
flags.DEFINE_string("out", None, "Work directory (corpus, data, checkpoints; reused across runs).")
flags.DEFINE_string("name", None, "Bundle name (bundle.json; run_demo --pretrained reads the bundle by it "
                    "when it is under omni_tf/resources/pretrained).")
flags.DEFINE_string("bundle_dir", "", "Where the bundle goes (default omni_tf/resources/pretrained/<name>).")
flags.DEFINE_bool("overwrite", False, "Replace an existing folder at the bundle's place (one this --out did "
                  "not write).")
flags.DEFINE_float("max_minutes", 60.0, "Wall-clock budget of this run's training (0 = max_steps only; "
                   "--config.training.max_minutes alone sets it too).")
flags.DEFINE_integer("num_utterances", 40000, "Pretraining corpus size (all splits).")
flags.DEFINE_integer("seed", 1, "Pretraining corpus seed.")
flags.DEFINE_integer("demo_seed", 0, "Seed of the demo corpus whose dev/test speakers and sentences are "
                     "kept out (run_demo --seed).")
flags.DEFINE_integer("eval_utterances", 500, "Pretraining test utterances for the bundle's WER (0 = all).")
flags.DEFINE_bool("extra_text", False, "Add the extra sentence pool to the corpus's train split "
                  "(CorpusSpec.extra_train_text).")
flags.DEFINE_string("pretrained", "", "Continue training this shipped dense bundle (a name under "
                    "omni_tf/resources/pretrained/ or a path); empty = from scratch.")
flags.mark_flags_as_required(["out", "name"])
TARGET_RECORD = "bundle_target.json"  # in --out: the bundle folder this work directory wrote
PLACEHOLDERS = {"--out": "P", "--bundle_dir": "B"}  # bundle.json's command: no path of this machine


def check_target(target: str, out: str) -> None:
    """``pretrained.check_bundle_target`` for this run (--overwrite, ``<out>/bundle_target.json``) as a
    usage error."""
    try:
        pretrained.check_bundle_target(target, os.path.join(out, TARGET_RECORD), FLAGS.overwrite)
    except FileExistsError as e:
        raise app.UsageError(f"{e}: give another --name or --bundle_dir, or --overwrite to replace it") from e


def portable_command(argv: list[str]) -> str:
    """The pretrain command line of ``argv`` (``sys.argv``) for bundle.json: --out / --bundle_dir values
    replaced by ``PLACEHOLDERS``, --config.paths.* by ``<path>``, a --pretrained path by
    ``pretrained.bundle_reference`` (a name stays)."""
    words, i = [], 1
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        takes_value = flag in (*PLACEHOLDERS, "--pretrained") or flag.startswith("--config.paths.")
        if takes_value and not eq and i + 1 < len(argv):  # "--out X"
            value, i = argv[i + 1], i + 1
        if takes_value:
            if flag in PLACEHOLDERS:
                value = PLACEHOLDERS[flag]
            elif flag.startswith("--config.paths."):
                value = "<path>"
            elif os.sep in value:  # --pretrained as a path; a name stays as given
                value = pretrained.bundle_reference(value)
            words.append(f"{flag}={value}")
        else:
            words.append(argv[i])
        i += 1
    return " ".join(["python -m recipes.synthetic.pretrain", *words])


def corpus_spec() -> synthetic.CorpusSpec:
    return synthetic.CorpusSpec(num_utterances=FLAGS.num_utterances, seed=FLAGS.seed,
                                within_train_of=FLAGS.demo_seed, extra_train_text=FLAGS.extra_text)


def train_and_account(config, workdir: str, runs_path: str) -> tuple[dict, float]:
    """One resumed training run; returns (loop metrics, CPU seconds summed over every run so far)."""
    runs = []
    if os.path.exists(runs_path):
        with open(runs_path, encoding="utf-8") as f:
            runs = json.load(f)
    cpu0, wall0 = time.process_time(), time.time()
    metrics = e2e.train(config, workdir)
    runs.append({"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu_s": time.process_time() - cpu0,
                 "wall_s": time.time() - wall0, "step": metrics.get("step"),
                 "restored_from": metrics.get("restored_from")})
    fileio.write_json(runs_path, runs)
    return metrics, sum(r["cpu_s"] for r in runs)


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.INFO)
    out = os.path.abspath(FLAGS.out)
    stages = Stages(out, log=lambda s: print(s, flush=True))
    try:
        fileio.check_name(FLAGS.name, "--name")
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    target = os.path.abspath(FLAGS.bundle_dir or pretrained.bundle_dir(FLAGS.name))
    if FLAGS.pretrained:
        config, parent_path, parent = e2e.bundle_config(FLAGS.config, FLAGS.pretrained)
        if os.path.realpath(parent_path) == os.path.realpath(target):
            raise app.UsageError(f"--pretrained={FLAGS.pretrained} would be overwritten by the new bundle "
                                 f"{target}: give another --name or --bundle_dir")
    check_target(target, out)  # before hours of training, not after
    if FLAGS.pretrained:
        data_dir = e2e.make_synthetic_data(stages, out, corpus_spec(), None)
        config, _ = e2e.shipped_data(stages, out, config, data_dir, parent_path, parent,
                                     "--pretrained's data copy")
    else:
        data_dir = e2e.make_synthetic_data(stages, out, corpus_spec(), FLAGS.config.model.vocab_size)
        config = experiment.with_data_dir(FLAGS.config, data_dir, source=e2e.PREPARED_DATA)
    config = e2e.run_config(config, "dense", FLAGS.config.training.max_steps,
                            e2e.budget_minutes(FLAGS))
    workdir = os.path.join(out, "train")
    metrics, cpu_s = train_and_account(config, workdir, os.path.join(out, "pretrain_runs.json"))
    rows = e2e.evaluate_levels(config, workdir, os.path.join(out, "eval"),
                               max_utterances=FLAGS.eval_utterances)
    dense = rows[0]  # uniform level 0 = the dense model
    model = e2e.restore(config, workdir).model
    info = {"name": FLAGS.name, "command": portable_command(sys.argv),
            "cpu_hours": round(cpu_s / 3600.0, 3), "steps": metrics.get("step"),
            "wer": dense["wer"], "cer": dense["cer"], "eval_utterances": dense["utterances"],
            "eval_split": "the pretraining corpus's test split (demo-train speakers/sentences only)",
            "corpus": corpus_spec().to_dict(), "demo_seed": FLAGS.demo_seed}
    if FLAGS.pretrained:
        info.update(pretrained.lineage(parent_path, parent, cpu_s, metrics.get("step")))
    check_target(target, out)
    fileio.write_json(os.path.join(out, TARGET_RECORD), {"bundle_dir": target})
    pretrained.write_bundle(model, config, *sources.spm_cmvn_paths(config), target, info)
    print(json.dumps(info, indent=1), f"\nwrote the bundle {target}", flush=True)


if __name__ == "__main__":
    app.run(main)
