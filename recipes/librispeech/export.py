"""Exports device tiers of a trained supernet to TFLite bundles (one directory per tier and quantization).

Usage (from the repository root; WORK = the training workdir with ckpt/, DATA = prepared dir with
<split>.tsv (--split, default dev), cmvn.json, spm.model):
  python -m recipes.librispeech.export --config=omni_tf/configs/experiment.py:tiny --workdir=WORK \
      --data_dir=DATA --out=WORK/tflite --tiers=s0=level:0,s50=sparsity:0.5,s90=level:6 \
      --quantizations=dynamic_int8,float32
  python -m recipes.librispeech.export ... --search_json=WORK/search.json     # per-kernel configs from search
  python -m recipes.librispeech.export ... --budgets=phone:1500000,watch:600000  # budgets -> searched config
  python -m recipes.librispeech.export ... --budgets=phone:1500000 --nobudget_search  # -> densest uniform
  python -m recipes.librispeech.export --config=omni_tf/configs/experiment.py:tiny --random_init \
      --data_dir=DATA --out=/tmp/tflite_smoke --tiers=s70=level:4                # untrained smoke export

``--tiers`` (the syntax of every recipe, ``recipes/tier_flags.py``): ``name=level:K`` is the uniform level
index K of the supernet's level set (mode pruned: (0, target)), ``name=sparsity:S`` the uniform level of
sparsity S (one of the set). ``--budgets`` are in the size metric of the ``--quantizations`` (all of one
metric: ``config.sparsity.search_metric``; search population / generations: ``config.sparsity.search_*``).
``--search_json`` is ``{tier: {kernel_name: level}}`` or ``{tier: {"config": {...}}}``. A checkpoint trained
with another level set than ``--config`` gives is refused (the error names both). Output:
``<out>/<tier>_<quantization>/{model.tflite, manifest.json, spm.model, android_benchmark.sh}``, plus
``<out>/report.md`` and ``<out>/pareto.png`` over all tiers there. A structured supernet
(``config.sparsity.granularity=structured``) exports sliced tiers; its configs are ``{group: level}``. A tier
failing parity is not written (the error names the numbers); the others continue and the exit status is 1.
Each tier folder is built aside and swapped in whole with its completion record (``COMPLETE.json``) last: a
killed export leaves the old tier or none, never a half one. One export per ``--out`` at a time (a lock); tier
names must match ``[A-Za-z0-9_.-]+`` (not ``.``/``..``).
"""
from __future__ import annotations

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

import omni_tf  # noqa: F401
from omni_tf import fileio
from omni_tf.configs import experiment
from omni_tf.data import features as features_lib
from omni_tf.data.librispeech import read_manifest
from omni_tf.data.prepare import check_prepared
from omni_tf.supernet import Supernet
from omni_tf.text.tokenizer import Tokenizer, check_model_vocab
from omni_tf.training import sources
from recipes.tier_flags import define_tiers_flag
from tflite_export import bundle, convert, inference_model, parity
from tflite_export.recognizer import audio_features

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "omni_tf/configs/experiment.py:tiny", "Experiment config.",
                                lock_config=True)
flags.DEFINE_string("workdir", "", "Training workdir (checkpoints in <workdir>/ckpt, "
                    "TensorBoard logs, metrics).")
flags.DEFINE_string("data_dir", "", "Prepared directory: <split>.tsv manifests, cmvn.json, "
                    "spm.model (experiment.with_data_dir: a --config.paths.* file given too wins unless the "
                    "program names that file).")
flags.DEFINE_string("split", "dev", "Manifest <split>.tsv (in --data_dir) for parity, int8 calibration and "
                    "the budget search: dev for the synthetic corpus, e.g. dev-other for LibriSpeech.")
flags.DEFINE_string("out", "", "Bundle directory (default <workdir>/tflite).")
define_tiers_flag([], "Uniform tiers (default: every level of the level set).", kinds=("level", "sparsity"))
flags.DEFINE_string("search_json", "", "JSON {tier: per-kernel level config} from the search recipe.")
flags.DEFINE_list("budgets", [], "name:budget,... in the size metric of --quantizations "
                  "(sparsity.search_metric), each resolved by the per-layer search (dev RNN-T loss) or, "
                  "with --nobudget_search, the densest uniform level.")
flags.DEFINE_bool("budget_search", True, "Resolve --budgets by searching per-layer levels.")
flags.DEFINE_integer("search_max_batches", 8, "Budget search: dev batches for the fitness (0 = all).")
flags.DEFINE_list("quantizations", ["dynamic_int8"], f"Export modes, each tier in every one: any of "
                  f"{convert.QUANT_MODES}, or auto: per tier the smallest file passing parity with encode "
                  "latency <= 1.2x the fastest passing mode (the other recipes' --quantization is one mode).")
flags.DEFINE_integer("dev_utterances", 20, "Dev utterances for parity / WER / latency.")
flags.DEFINE_integer("calib_utterances", 20, "Dev utterances whose streaming loop calibrates full int8 "
                     "(the ones after the parity set when <split>.tsv has them).")
flags.DEFINE_list("int8_keep_float", list(convert.INT8_KEEP_FLOAT),
                  f"Op groups full int8 keeps float; any of {sorted(convert.INT8_FLOAT_GROUPS)} "
                  "(empty: none).")
flags.DEFINE_float("max_wer_rel_increase", parity.MAX_WER_REL_INCREASE,
                   "Parity gate for float16/int8 tiers: TFLite WER <= Keras WER * (1 + this).")
flags.DEFINE_enum("sparse", "auto", ["auto", "never", "always"],
                  "Sparse encoding of the tier files: auto = only where smaller, right and "
                  "XNNPACK-runnable; always = also int8 files that need XNNPACK off (smaller, 3-5x "
                  "slower).")
flags.DEFINE_bool("random_init", False, "Export a freshly initialized model (smoke test, no checkpoint).")
flags.DEFINE_string("series", "omni", "Series name in the report / Pareto plot (e.g. individually-pruned).")


def _split_manifest(data_dir: str) -> str:
    path = os.path.join(data_dir, f"{FLAGS.split}.tsv")
    if not os.path.isfile(path):
        raise app.UsageError(f"{path} not found (--split={FLAGS.split}; prepared manifests: "
                             f"{sorted(f for f in os.listdir(data_dir) if f.endswith('.tsv'))})")
    return path


def searched_configs(config, supernet: Supernet, budgets: dict[str, float], metric: str
                     ) -> dict[str, dict[str, int]]:
    """{tier: per-kernel level config}: the supernet search (``omni_tf.training.evaluation``) per budget.

    Fitness = RNN-T loss on the first ``--search_max_batches`` batches of --split; results also go to
    ``<out>/search/`` (``tier_<name>.json``, ``search.md``).
    """
    from omni_tf.training import evaluation  # noqa: PLC0415

    if supernet.mode != "omni" or FLAGS.random_init:
        raise app.UsageError("--budgets with --budget_search needs a supernet checkpoint (mode omni)")
    source = sources.ManifestSource(config, split="dev", training=False)
    batches = evaluation.load_batches(source.dataset(0), FLAGS.search_max_batches)
    out = FLAGS.out or os.path.join(FLAGS.workdir, "tflite")
    found = evaluation.search_tiers(supernet, batches, budgets, metric, "loss", source.tokenizer,
                                    os.path.join(out, "search"))
    for name, r in found.items():
        logging.info("budget %s: %.0f %s -> searched config of size %.0f (uniform %.0f)", name, r["budget"],
                     metric, r["size"], r["uniform_size"])
    return {name: {k: int(v) for k, v in r["config"].items()} for name, r in found.items()}


def tier_specs(config, supernet: Supernet) -> dict[str, object]:
    """{tier name: TierSpec or per-kernel config} from --tiers / --search_json / --budgets."""
    specs: dict[str, object] = dict(FLAGS.tiers)
    if FLAGS.search_json:
        with open(FLAGS.search_json) as f:
            for name, value in json.load(f).items():
                specs[name] = {k: int(v) for k, v in value.get("config", value).items()}
    if FLAGS.budgets:
        metrics = {supernet.budget_metric(q) for q in FLAGS.quantizations}
        if len(metrics) > 1:
            raise app.UsageError(f"--budgets: the --quantizations {FLAGS.quantizations} size budgets in "
                                 f"different metrics {sorted(metrics)}; export them in separate runs or set "
                                 "--config.sparsity.search_metric")
        metric = metrics.pop()
        budgets = {name: float(b) for name, _, b in (item.partition(":") for item in FLAGS.budgets)}
        if FLAGS.budget_search:
            specs.update(searched_configs(config, supernet, budgets, metric))
        else:
            size_model = supernet.size_model()
            for name, budget in budgets.items():
                specs[name] = size_model.uniform_level_for_budget(budget, metric)
    if not specs:
        specs = {f"s{round(100 * s)}": k for k, s in enumerate(supernet.levels or (0.0,))}
    for name in specs:  # <name>_<quantization> becomes a folder and goes into android_benchmark.sh
        try:
            fileio.check_name(name, "tier name (--tiers / --search_json / --budgets)")
        except ValueError as e:
            raise app.UsageError(str(e)) from e
    return specs


def dev_data(config, data_dir: str):
    """(features, references, tokenizer, cmvn, int8 calibration features | None) from <split>.tsv; the
    tokenizer and CMVN of ``config.paths`` (``sources.spm_cmvn_paths``), as search and training use."""
    spm, cmvn = sources.spm_cmvn_paths(config)  # --config.paths.spm_model / cmvn, else those in data_dir
    check_prepared([_split_manifest(data_dir), cmvn])  # refuses files of an unfinished or altered prepare
    mean, std = features_lib.load_cmvn(cmvn)
    tokenizer = Tokenizer(spm)
    check_model_vocab(tokenizer, config.model.vocab_size, "config.model.vocab_size")
    all_rows = read_manifest(_split_manifest(data_dir))
    rows = all_rows[: FLAGS.dev_utterances]
    if not rows:
        raise app.UsageError(f"{_split_manifest(data_dir)} has no utterances")
    feats = [audio_features(r["path"], config.data, mean, std) for r in rows]
    calib_rows = all_rows[FLAGS.dev_utterances: FLAGS.dev_utterances + FLAGS.calib_utterances]
    calib = None
    if {"int8", bundle.AUTO} & set(FLAGS.quantizations) and calib_rows:
        calib = [audio_features(r["path"], config.data, mean, std) for r in calib_rows]
    return feats, [r["text"] for r in rows], tokenizer, (mean, std), calib


def load_supernet(config) -> Supernet:
    supernet = Supernet(config)
    if FLAGS.random_init:
        if supernet.masks is not None:
            supernet.masks.update_rankings()  # rank the fresh weights at the final levels
        return supernet
    if not FLAGS.workdir:
        raise app.UsageError("give --workdir (checkpoint) or --random_init")
    supernet.restore(FLAGS.workdir)
    return supernet


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    if not FLAGS.data_dir:
        raise app.UsageError("give --data_dir (<split>.tsv, cmvn.json, spm.model)")
    config = experiment.with_data_dir(FLAGS.config, FLAGS.data_dir, dev=f"{FLAGS.split}.tsv")
    out = FLAGS.out or os.path.join(FLAGS.workdir, "tflite")
    with fileio.DirLock(out):  # one export per --out at a time
        return export(config, out)


def export(config, out: str) -> int:
    """Every tier x quantization into ``out`` (each tier folder written whole); 1 if a tier failed parity."""
    feats, refs, tokenizer, cmvn, calib = dev_data(config, FLAGS.data_dir)  # checks the vocab first
    supernet = load_supernet(config)
    data = bundle.ParitySet(feats, refs, tokenizer, calib, config.data, cmvn)
    failed = []
    for name, spec in tier_specs(config, supernet).items():
        baked = inference_model.bake_supernet(supernet, spec)
        for quant in FLAGS.quantizations:
            tier = f"{name}_{quant}"
            options = bundle.ExportOptions(quant, FLAGS.sparse, FLAGS.series, FLAGS.calib_utterances,
                                           int8_keep_float=tuple(FLAGS.int8_keep_float),
                                           max_wer_rel_increase=FLAGS.max_wer_rel_increase)
            try:
                m = bundle.export_tier(baked, tier, out, data, options)
            except parity.ParityError as e:
                logging.error("%s", e)
                failed.append(tier)
                continue
            logging.info("%s: %d bytes, WER keras %s tflite %s, RTF %.4f", tier, m["bytes_on_disk"],
                         m["wer"]["keras"], m["wer"]["tflite"], m["latency"]["rtf"])
    rows = bundle.report_rows(bundle.load_bundle(out))
    bundle.write_report(rows, os.path.join(out, "report.md"))
    bundle.pareto_plot(rows, os.path.join(out, "pareto.png"))
    logging.info("report: %s", os.path.join(out, "report.md"))
    return 1 if failed else 0


if __name__ == "__main__":
    app.run(main)
