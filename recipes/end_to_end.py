"""The stages from a prepared corpus to verified per-tier TFLite bundles, shared by the end-to-end recipes.

``recipes/synthetic/run_demo.py`` (synthetic corpus, the README main job) and ``recipes/librispeech/run.py``
(real LibriSpeech) differ only in how the corpus is made and named; both call these functions, which build
every model with ``omni_tf.model.build_model`` through the library (``omni_tf.training``,
``tflite_export``).

Layout under ``out``: ``data/`` (manifests, cmvn.json, spm.model), ``train/<run>/`` (checkpoints,
TensorBoard), ``eval/``, ``search/``, ``tiers/<tier>/`` (model.tflite, manifest.json, spm.model,
android_benchmark.sh, COMPLETE.json), ``REPORT.md``, ``pareto.png``, ``stages/`` (what finished, with its
inputs). Training stages are keyed on the config fields that change the result (``train_stage``); a tier
folder is written whole (``bundle.write_tier``); the recipes hold ``out``'s lock while they run.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import logging
from ml_collections import config_flags

import omni_tf  # noqa: F401
from omni_tf import fileio
from omni_tf.configs import experiment
from omni_tf.data import features as features_lib
from omni_tf.data import prepare, synthetic
from omni_tf.data.librispeech import read_manifest
from omni_tf.sparsity import structured
from omni_tf.supernet import (
    BUDGET_METRIC,
    DISK_BYTES_APPROXIMATE,
    SparsitySettings,
    Supernet,
    TierSpec,
    disk_bytes_metric,
    with_tier_levels,
)
from omni_tf.text.tokenizer import Tokenizer, check_model_vocab, train_from_manifest
from omni_tf.training import evaluation, loop, pretrained, sources
from omni_tf.training import workdir as workdir_lib
from recipes.stages import Stages
from recipes.tier_flags import define_tiers_flag
from tflite_export import bundle, inference_model
from tflite_export import convert as convert_lib
from tflite_export.recognizer import audio_features

OMNI_SERIES, PRUNED_SERIES = "omni", "individually-pruned"


# ``experiment.with_data_dir``'s ``source`` for the recipes that prepare their data under ``--out``.
PREPARED_DATA = "the data dir this recipe prepares under --out"
# Under ``--out``: the corpus manifests with a shipped bundle's spm.model / cmvn.json, and its source record.
SHIPPED_DATA, SHIPPED_SOURCE = "data_shipped", "source.json"


def make_synthetic_data(stages: Stages, out: str, spec: synthetic.CorpusSpec, vocab_size: int | None) -> str:
    """Stages corpus (espeak-ng, ``synthetic.CorpusSpec`` ``spec``) -> prepare -> spm under ``out``;
    returns ``<out>/data`` (manifests, cmvn.json, spm.model). ``vocab_size`` None: no spm stage (a run
    from a bundle reads the bundle's ``spm.model``)."""
    corpus_dir, data_dir = os.path.join(out, "corpus"), os.path.join(out, "data")
    stages.run("corpus", spec.to_dict(), lambda: synthetic.make_corpus(corpus_dir, spec, num_workers=2))
    stages.run("prepare", {}, lambda: {s: len(scan.rows)
                                       for s, scan in prepare.run(corpus_dir, data_dir).items()})
    if vocab_size is not None:
        stages.run("spm", {"vocab": vocab_size}, lambda: train_from_manifest(
            os.path.join(data_dir, "train.tsv"), os.path.join(data_dir, "spm"), vocab_size).vocab_size)
    return data_dir


def config_overrides(flag_values: Any) -> tuple[str, ...]:
    """The dotted config fields set on the command line (``--config.sparsity.sampler=uniform`` ->
    ``sparsity.sampler``) of a recipe's ``--config`` flag: the fields a config variant the recipe adds
    (``experiment.with_variant(..., keep=...)``) must leave as given, even when given the default value."""
    return tuple(config_flags.get_override_values(flag_values["config"]))


def flag_or_config(flag_values: Any, flag: str, field: str) -> Any:
    """The value of a setting a recipe takes both as ``--<flag>`` and as ``--config.<field>`` (e.g.
    ``--max_minutes`` / ``training.max_minutes``): the config field's when given on the command line
    (``config_overrides``) without ``--<flag>``, else ``--<flag>``'s (its default included), so neither is
    silently replaced by the other's default. Raises ValueError naming both when both are given with
    different values."""
    given = flag_values[flag].value
    if field not in config_overrides(flag_values):
        return given
    value = flag_values.config
    for key in field.split("."):
        value = value[key]
    if flag_values[flag].present and given != value:
        raise ValueError(f"--{flag}={given} and --config.{field}={value} both set {field}: give one")
    return value


def budget_minutes(flag_values: Any) -> float:
    """The wall-clock budget of a recipe's training (``run_config`` writes it into ``training.max_minutes``):
    ``flag_or_config(flag_values, "max_minutes", "training.max_minutes")``."""
    return float(flag_or_config(flag_values, "max_minutes", "training.max_minutes"))


def shipped_config(config: ml_collections.ConfigDict, bundle: str, keep: Sequence[str] = ()
                   ) -> tuple[ml_collections.ConfigDict, str, dict[str, Any]]:
    """(a copy of ``config`` that starts from the shipped dense bundle ``bundle``, the bundle's path, its
    ``bundle.json``).

    The bundle's model config replaces ``config.model``, ``training.init_from`` names the bundle and the
    ``finetune`` config variant is added unless ``config`` has it (``experiment.with_variant``: no dense
    warm-up, the sparsity ramp over 2-50 % of ``training.max_steps``, peak learning rate 2e-3 after 50
    steps; fields set explicitly keep their value: those named in ``keep``, e.g. ``training.learning_rate``
    from ``--config.training.learning_rate`` (``config_overrides``), and a caller's settings). The one
    place a run is made to start from shipped weights: ``use_shipped`` (``run_demo --init=shipped``) and
    ``benchmarks/omni_vs_pruned.py --pretrained``, so both sides of a comparison get the same schedule.
    ``bundle``: a name under ``omni_tf/resources/pretrained/`` or a path. Raises FileNotFoundError naming
    a missing bundle folder or file.
    """
    return bundle_config(experiment.with_variant(config, "finetune", keep), bundle)


def bundle_config(config: ml_collections.ConfigDict, bundle: str
                  ) -> tuple[ml_collections.ConfigDict, str, dict[str, Any]]:
    """(a copy of ``config`` with the bundle's model config and ``training.init_from`` = its path, the path,
    its ``bundle.json``): ``shipped_config`` without a schedule variant (``recipes/synthetic/pretrain.py
    --pretrained`` continues dense pretraining with the command line's schedule). Raises FileNotFoundError
    naming a missing bundle folder or file."""
    path = pretrained.bundle_dir(bundle)
    info = pretrained.check_bundle(path)
    c = copy.deepcopy(config)
    with c.unlocked():
        c.model = pretrained.model_config(path)
        c.training.init_from = path
    return c, path, info


# run_demo --init=shipped: the supernet trains dense + every tier each step with in-place distillation
# (at the demo's budget as good or better than one uniform level per step: docs/RESULTS.md 1c)
SHIPPED_SUPERNET_VARIANT = "tier_sandwich"


def initial_config(stages: Stages, out: str, config: ml_collections.ConfigDict, data_dir: str, init: str,
                   bundle: str, keep: Sequence[str] = ()) -> tuple[ml_collections.ConfigDict, str]:
    """(config, data dir) of ``run_demo --init`` (``scratch`` / ``shipped``). ``shipped``: the
    ``tier_sandwich`` and ``finetune`` config variants are added and the run starts from ``bundle`` with its
    data files (``use_shipped``); ``keep``: the command line's ``--config.*`` fields, left as given.
    ``scratch``: ``config`` on ``data_dir`` as it is. Raises ValueError for another ``init``."""
    if init == "shipped":
        c = experiment.with_variant(config, SHIPPED_SUPERNET_VARIANT, keep)
        return use_shipped(stages, out, c, data_dir, bundle, keep)
    if init != "scratch":
        raise ValueError(f"init must be scratch or shipped, got {init!r}")
    return experiment.with_data_dir(config, data_dir, source=PREPARED_DATA), data_dir


def use_shipped(stages: Stages, out: str, config: ml_collections.ConfigDict, data_dir: str, bundle: str,
                keep: Sequence[str] = ()) -> tuple[ml_collections.ConfigDict, str]:
    """``--init=shipped``: (config, data dir) that start training from the shipped dense bundle ``bundle``.

    The config is ``shipped_config``'s (the bundle's model config, ``training.init_from``, the ``finetune``
    schedule), so the omni supernet and every individually pruned model start from its weights;
    ``<out>/data_shipped`` holds the manifests of ``data_dir`` with the bundle's ``spm.model`` and
    ``cmvn.json``, so labels and features are those the weights were trained with. Raises FileNotFoundError
    naming a missing bundle folder, and ValueError naming ``config.paths.spm_model`` / ``cmvn`` /
    ``manifest_dir`` when set to other files (the bundle's must be used); set manifests are kept. ``config``
    is the user's (no data dir applied yet); ``keep``: its fields the ``finetune`` variant leaves as given.
    """
    shipped, path, info = shipped_config(config, bundle, keep)
    return shipped_data(stages, out, shipped, data_dir, path, info, "--init=shipped's data copy")


def shipped_data(stages: Stages, out: str, config: ml_collections.ConfigDict, data_dir: str, path: str,
                 info: Mapping[str, Any], source: str) -> tuple[ml_collections.ConfigDict, str]:
    """(``config`` reading ``<out>/data_shipped``, that dir): the stage ``shipped`` copies the manifests of
    ``data_dir`` and the bundle ``path``'s spm.model / cmvn.json there (``copy_shipped_data``; keyed on the
    bundle path and its ``info``). ``source``: names the data dir in ``experiment.with_data_dir``'s errors."""
    shipped_dir = os.path.join(out, SHIPPED_DATA)
    c = experiment.with_data_dir(config, shipped_dir, spm_model="spm.model", cmvn="cmvn.json", source=source)
    stages.run("shipped", {"bundle": path, "info": dict(info)},
               lambda: copy_shipped_data(data_dir, path, shipped_dir), outputs=(shipped_dir,))
    return c, shipped_dir


def copy_shipped_data(data_dir: str, bundle_path: str, shipped_dir: str) -> dict[str, Any]:
    """Copies the manifests (``*.tsv``) of ``data_dir`` and the bundle's data files (``spm.model``,
    ``cmvn.json``: ``pretrained.DATA_FILES``) into ``shipped_dir``; returns ``{"manifests": names,
    "bundle", "data_dir"}`` (absolute paths: the copy's source, also written to
    ``<shipped_dir>/source.json``). Used by ``use_shipped`` and ``benchmarks/omni_vs_pruned.py --pretrained``.
    """
    os.makedirs(shipped_dir, exist_ok=True)
    names = sorted(n for n in os.listdir(data_dir) if n.endswith(".tsv"))
    for name in names:
        shutil.copyfile(os.path.join(data_dir, name), os.path.join(shipped_dir, name))
    for name in pretrained.DATA_FILES:
        shutil.copyfile(os.path.join(bundle_path, name), os.path.join(shipped_dir, name))
    source = {"manifests": names, "bundle": os.path.abspath(bundle_path),
              "data_dir": os.path.abspath(data_dir)}
    fileio.write_json(os.path.join(shipped_dir, SHIPPED_SOURCE), source)
    return source


def with_granularity(config: ml_collections.ConfigDict, granularity: str | None) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``sparsity.granularity`` set (the recipes' ``--sparsity_granularity``);
    ``config`` itself when ``granularity`` is None."""
    if granularity is None:
        return config
    c = copy.deepcopy(config)
    with c.unlocked():
        c.sparsity.granularity = structured.validate_granularity(granularity)
    return c


def run_config(config: ml_collections.ConfigDict, mode: str, max_steps: int, max_minutes: float,
               target_sparsity: float | None = None) -> ml_collections.ConfigDict:
    """``config`` for one training run: mode, step and wall-clock budget (and the pruned baseline's level)."""
    c = copy.deepcopy(config)
    with c.unlocked():
        c.training.mode = mode
        c.training.max_steps = int(max_steps)
        c.training.max_minutes = float(max_minutes)
        if target_sparsity is not None:
            c.sparsity.target_sparsity = float(target_sparsity)
    return c


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (resuming from ``workdir``'s checkpoint if any); returns the loop's final metrics.

    Holds ``workdir``'s lock (``omni_tf.training.workdir.claim``: a second writer fails naming the holder).
    ``max_minutes`` counts the training time of every invocation of the workdir (the loop's progress clock).
    """
    lock = workdir_lib.claim(workdir, config)
    try:
        metrics = loop.train(config, workdir)
    finally:
        if lock is not None:
            lock.release()
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | type(None))}


def _budget_raised(done: Mapping[str, Any], budget: Mapping[str, Any]) -> bool:
    """Whether a finished training stage (``done``: its record) trains further under ``budget``."""
    old, result = done.get("budget") or {}, done.get("result") or {}
    if budget["max_steps"] <= int(result.get("step", 0)):
        return False
    if result.get("stopped_by") == "max_minutes":
        return budget["max_minutes"] == 0 or budget["max_minutes"] > old.get("max_minutes", 0)
    return budget["max_steps"] > old.get("max_steps", 0)


def train_stage(stages: Stages, name: str, config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """The training stage: keyed on the config fields that change the result (no paths, cadence, budget).

    A finished run is reused; with a larger step or time budget it continues from its checkpoint (the time
    budget counts every invocation); with other result fields the old workdir is moved aside, not deleted.
    """
    t = config.training
    budget = {"max_steps": int(t.max_steps), "max_minutes": float(t.max_minutes)}
    return stages.run(name, workdir_lib.result_fields(config), lambda: train(config, workdir),
                      outputs=(workdir,), budget=budget, continue_if=lambda d: _budget_raised(d, budget))


def split_batches(config: ml_collections.ConfigDict, split: str, max_utterances: int) -> tuple[list, Any]:
    """Materialised batches of (the first ``max_utterances``, 0 = all, of) ``split`` and its tokenizer."""
    source = sources.ManifestSource(config, split=split, training=False)
    batches = evaluation.load_batches(source.dataset(0))
    if max_utterances > 0:
        kept, n = [], 0
        for b in batches:
            if n >= max_utterances:
                break
            kept.append(b)
            n += len(b["ids"])
        batches = kept
    return batches, source.tokenizer


def restore(config: ml_collections.ConfigDict, workdir: str) -> Supernet:
    """The supernet of ``config`` with the latest checkpoint of ``workdir``."""
    supernet = Supernet(config)
    supernet.restore(workdir)
    return supernet


def evaluate_levels(config: ml_collections.ConfigDict, workdir: str, out_dir: str,
                    configs: Mapping[str, Mapping[str, int]] | None = None, max_utterances: int = 0,
                    split: str = "test") -> list[dict[str, Any]]:
    """WER/CER of every uniform level (and of ``configs``) of ``workdir``'s checkpoint on ``split``."""
    batches, tokenizer = split_batches(config, split, max_utterances)
    return evaluation.evaluate_levels(restore(config, workdir), batches, tokenizer, configs=configs,
                                      out_dir=out_dir, split=split)


def tier_budgets(config: ml_collections.ConfigDict, workdir: str, tiers: Mapping[str, TierSpec],
                 quantization: str) -> dict[str, Any]:
    """``{"metric": size metric, "budgets": {tier: budget}, "dense_file_bytes", "overhead_bytes"}``
    (``Supernet.budget`` of each tier spec).

    With a ``bytes:`` tier and the ``int8_bytes`` metric (the bytes of a dense-encoded dynamic-int8 file,
    e.g. structured supernets), the dense and the sparsest uniform tiers are converted to dynamic-int8 files
    once; the budgets then come off the dense file's measured bytes minus the larger of the two files'
    uncounted overheads, so the tier files on disk meet them, not only their counted tensors.
    """
    supernet = restore(config, workdir)
    metric = supernet.budget_metric(quantization)
    dense_file = overhead = None
    if metric == "int8_bytes" and any(spec.kind == "bytes" for spec in tiers.values()) and supernet.levels:
        sizes = supernet.size_model()
        measured = {}
        for k in sorted({0, len(supernet.levels) - 1}):
            module = inference_model.bake_supernet(supernet, k).module
            measured[k] = len(convert_lib.convert_module(module, "dynamic_int8", sparse="never").content)
        dense_file = measured[0]
        overhead = max(b - sizes.measure(sizes.uniform_config(k), metric) for k, b in measured.items())
    return {"metric": metric, "dense_file_bytes": dense_file, "overhead_bytes": overhead,
            "budgets": {t: supernet.budget(spec, metric, dense_file, overhead) for t, spec in tiers.items()}}


def search(config: ml_collections.ConfigDict, workdir: str, budgets: Mapping[str, float], out_dir: str,
           metric: str) -> dict[str, dict[str, Any]]:
    """Per-tier evolutionary search under ``budgets``; fitness ``sparsity.search_fitness`` (loss or greedy
    WER) on the first ``sparsity.search_dev_utterances`` of the dev split."""
    supernet = restore(config, workdir)
    s = supernet.settings
    batches, tokenizer = split_batches(config, "dev", s.search_dev_utterances)
    return evaluation.search_tiers(supernet, batches, budgets, metric, s.search_fitness, tokenizer, out_dir)


def choose(config: ml_collections.ConfigDict, workdir: str, found: Mapping[str, Mapping[str, Any]],
           out_dir: str) -> dict[str, dict[str, Any]]:
    """Per tier the searched config if its greedy WER on the whole dev split is better than the uniform
    config's of the same budget (bootstrap interval below 0), else the uniform one (``choose_tiers``)."""
    supernet = restore(config, workdir)
    batches, tokenizer = split_batches(config, "dev", 0)
    return evaluation.choose_tiers(supernet, batches, tokenizer, found, out_dir)


def utterance_features(config: ml_collections.ConfigDict, manifest: str, count: int
                       ) -> tuple[list[np.ndarray], list[str]]:
    """CMVN-normalized (``config.paths``' CMVN) features [T, 80] and transcripts of the first ``count``
    utterances of ``manifest``."""
    cmvn = sources.spm_cmvn_paths(config)[1]
    prepare.check_prepared([manifest, cmvn])
    mean, std = features_lib.load_cmvn(cmvn)
    rows = read_manifest(manifest)[:count]
    if not rows:
        raise ValueError(f"{manifest}: no utterances to export against")
    return [audio_features(r["path"], config.data, mean, std) for r in rows], [r["text"] for r in rows]


def export_tiers(config: ml_collections.ConfigDict, workdir: str, tiers: Mapping[str, Any], out_dir: str,
                 utterances: int, options: bundle.ExportOptions) -> dict[str, dict[str, Any]]:
    """Exports ``{tier: level index or per-kernel config}`` of the checkpoint in ``workdir`` (structured
    masks: ``{group: level}``, exported as a sliced dense model, ``tflite_export/inference_model.py``).

    Parity (Keras vs LiteRT tokens; WER both ways) runs on the first ``utterances`` of the test split, int8
    calibration on the dev split; a tier that fails parity raises ``tflite_export.parity.ParityError`` and
    nothing of it is written.
    """
    supernet = restore(config, workdir)
    feats, refs = utterance_features(config, sources.manifest_path(config, "test"), utterances)
    calib = None
    if options.quantization in ("int8", bundle.AUTO):  # calibrate on dev, judge on test
        calib, _ = utterance_features(config, sources.manifest_path(config, "dev"), options.calib_utterances)
    spm, cmvn = sources.spm_cmvn_paths(config)
    tokenizer = Tokenizer(spm)
    check_model_vocab(tokenizer, config.model.vocab_size, "config.model.vocab_size")
    data = bundle.ParitySet(feats, refs, tokenizer, calib, config.data, features_lib.load_cmvn(cmvn))
    out = {}
    for name, spec in tiers.items():
        manifest_json = bundle.export_tier(inference_model.bake_supernet(supernet, spec), name, out_dir, data,
                                           options)
        out[name] = {k: manifest_json[k] for k in ("tier", "series", "bytes_on_disk", "nonzero_params")}
    return out


def report_row(manifest: Mapping[str, Any], keras_eval: Mapping[str, Any] | None,
               train_seconds: float | None) -> dict[str, Any]:
    """One REPORT.md row from a tier's manifest.json and its Keras evaluation on the full test split."""
    sp = manifest["sparsity"]
    hist = sp.get("level_histogram")
    summary = (f"per-layer {hist}" if hist else f"uniform {sp.get('level_sparsity', '')}")
    lat = manifest["latency"]
    return {"tier": manifest["tier"], "series": manifest.get("series", OMNI_SERIES),
            "config": summary, "sparsity": sp.get("prunable_sparsity"),
            "nonzero_params": manifest["nonzero_params"], "bytes": manifest["bytes_on_disk"],
            "wer_keras_test": keras_eval.get("wer") if keras_eval else None,
            "wer_keras": manifest["wer"].get("keras"), "wer_tflite": manifest["wer"].get("tflite"),
            "ms_per_chunk": lat["median_ms"]["encode"], "rtf": lat["rtf"],
            "train_minutes": None if train_seconds is None else round(train_seconds / 60.0, 1)}


REPORT_COLUMNS = ("tier", "series", "choice", "config", "sparsity", "nonzero_params", "bytes",
                  "wer_keras_test", "wer_keras", "wer_tflite", "ms_per_chunk", "rtf", "train_minutes")


def write_report(rows: Sequence[Mapping[str, Any]], out: str, preamble: str, level_rows: Sequence[Mapping],
                 quantization: str = "dynamic_int8", sparse: str = "auto") -> str:
    """``<out>/REPORT.md`` + ``<out>/pareto.png`` (x: bytes on disk in ``quantization``, ``pareto_points``);
    returns the tier table (Markdown)."""
    extra = sorted({k for r in rows for k in r if k.startswith("wer_keras_") and k not in REPORT_COLUMNS})
    extra_levels = sorted({k for r in level_rows for k in r if k.startswith("wer_") and k != "wer"})
    at = REPORT_COLUMNS.index("wer_keras_test") + 1  # the other test splits beside the test split
    table = bundle.markdown_table(rows, REPORT_COLUMNS[:at] + tuple(extra) + REPORT_COLUMNS[at:])
    levels = bundle.markdown_table(level_rows, ("series", "name", "wer", *extra_levels, "cer",
                                                "nonzero_params", "int8_sparse_bytes", "utterances"))
    extra_note = (f" {', '.join(f'`{k}`' for k in extra)}: the same on another test split "
                  "(`test_ood`: out of domain, omni_tf/data/ood.py)." if extra else "")
    text = (f"# omni_tf report\n\n{preamble}\n\n## Device tiers\n\n{table}\n"
            "`wer_keras_test`: Keras greedy WER on the whole test split; `wer_keras` / `wer_tflite`: "
            "the same utterances through Keras and through the exported LiteRT model (parity set); "
            "`ms_per_chunk`: median LiteRT encode step, 1 thread; `rtf`: streaming real-time factor "
            f"(encode + greedy predict/join), 1 thread.{extra_note}\n\n"
            f"{_choice_text(rows)}![Pareto](pareto.png)\n\n"
            "## Every uniform level (Keras, test split)\n\n"
            f"{levels}")
    fileio.write_text(os.path.join(out, "REPORT.md"), text)
    approx = ", approximate" if quantization in DISK_BYTES_APPROXIMATE else ""
    points = pareto_points(rows, level_rows, quantization, sparse)
    bundle.pareto_plot(points, os.path.join(out, "pareto.png"), wer_key="wer",
                       x_label=f"bytes on disk, {quantization} (MB); hollow: size model{approx}",
                       y_label="WER (%), Keras greedy, test split")
    return table


def pareto_points(rows: Sequence[Mapping[str, Any]], level_rows: Sequence[Mapping[str, Any]],
                  quantization: str, sparse: str = "auto") -> list[dict[str, Any]]:
    """The Pareto plot's points: ``{"series", "name", "bytes", "wer", "estimated"}``, one per tier row and
    per uniform-level row (the dense level included).

    Exported tiers are at their measured file size (manifest ``bytes_on_disk``, ``estimated`` False);
    uniform levels were not exported, so they are at the bytes their file would have in ``quantization``
    with sparse encoding ``sparse`` (``omni_tf.supernet.disk_bytes_metric`` of the row's size-model
    fields, ``estimated`` True): with weight masks every dense-encoded level is the dense size, which is
    what the file would be. ``wer``: the Keras greedy WER on the test split (a tier without it: its LiteRT
    parity WER). ValueError names a level row without that size field.
    """
    metric = disk_bytes_metric(quantization, sparse)
    points = []
    for r in rows:
        wer = r.get("wer_keras_test")
        points.append({"series": r.get("series", OMNI_SERIES), "name": r["tier"], "bytes": r["bytes"],
                       "wer": r.get("wer_tflite") if wer is None else wer, "estimated": False})
    for r in level_rows:
        if metric not in r:
            raise ValueError(f"level row {r.get('name')!r} ({r.get('series')}) has no size field {metric!r}"
                             f" (the bytes of a {quantization} file); it has {sorted(r)}")
        points.append({"series": f"{r.get('series', OMNI_SERIES)} uniform levels", "name": r["name"],
                       "bytes": r[metric], "wer": r["wer"], "estimated": True})
    return points


def _choice_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """Why each omni tier is its searched or its uniform config (the ``choose`` stage), as Markdown."""
    lines = [f"- {r['tier']}: {r['choice']} ({r['choice_reason']})" for r in rows if r.get("choice_reason")]
    if not lines:
        return ""
    return ("`choice`: the searched per-layer config is kept only when its greedy WER on the whole dev split "
            "is better than the uniform config of the same budget (95 % paired bootstrap interval of the "
            "difference below 0); otherwise the tier is the uniform config.\n\n" + "\n".join(lines) + "\n\n")


def print_report(rows: Sequence[Mapping[str, Any]], out: str, preamble: str,
                 level_rows: Sequence[Mapping], quantization: str = "dynamic_int8", sparse: str = "auto"
                 ) -> None:
    """Writes ``out``/REPORT.md and pareto.png (``write_report``) and prints the preamble and tier table."""
    table = write_report(rows, out, preamble, level_rows, quantization, sparse)
    print(f"\n{preamble}\n\n{table}\nwrote {out}/REPORT.md and {out}/pareto.png", flush=True)


def run_recipe(flag_values: Any, make_data: Callable[[Stages, str, ml_collections.ConfigDict], str],
               configure: Callable[[Stages, str, str], tuple[ml_collections.ConfigDict, str]],
               describe: Callable[[ml_collections.ConfigDict, Mapping[str, Any]], str],
               extra_tests: tuple[str, ...] = ()) -> None:
    """An end-to-end recipe's ``main``: ``make_data(stages, out, config) -> data_dir``,
    ``configure(stages, out, data_dir) -> (config, data_dir)`` (paths set), ``--sparsity_granularity``, the
    tiers' sparsities added to the level set (``omni_tf.supernet.with_tier_levels``, so a ``sparsity:S``
    tier is a trained uniform level and a row of the levels table), ``run_tiers`` (plus the
    ``extra_tests`` splits), then the report with ``describe(config, train_metrics)`` and the stage time as
    preamble."""
    logging.set_verbosity(logging.INFO)
    out = os.path.abspath(flag_values.out)
    opts = dataclasses.replace(Options.from_flags(flag_values), extra_tests=tuple(extra_tests))
    with fileio.DirLock(out):  # one run per --out (each stage also locks the folder it writes)
        stages = Stages(out, log=lambda s: print(s, flush=True))
        data_dir = make_data(stages, out, flag_values.config)
        config, _ = configure(stages, out, data_dir)  # config.paths: every file the stages read
        config = with_granularity(config, flag_values.sparsity_granularity)
        config = with_tier_levels(config, opts.tiers, config_overrides(flag_values))
        rows, level_rows, train_metrics = run_tiers(stages, out, config, opts)
        preamble = (f"{describe(config, train_metrics)}; quantization {flag_values.quantization}; "
                    f"granularity {config.sparsity.granularity}, block {config.sparsity.block}. "
                    f"Stages: {sum(stages.timings.values()) / 60:.1f} min.")
        print_report(rows, out, preamble, level_rows, opts.quantization, opts.sparse)


def load_manifests(tier_dir: str) -> dict[str, dict[str, Any]]:
    """The manifest of a whole tier folder (``bundle.read_tier``: refuses a missing/disagreeing record)."""
    return bundle.read_tier(tier_dir)


def define_flags(flags: Any) -> None:
    """The flags both end-to-end recipes (run_demo, librispeech/run) share, with the same defaults."""
    define_tiers_flag(["speaker=sparsity:0.6", "phone=sparsity:0.75", "wearable=sparsity:0.9"],
                      "Device tiers; each tier's budget (in sparsity.search_metric units) is met by the "
                      "per-layer search. Every sparsity:S is added to config.sparsity.levels (trained as a "
                      "uniform level; level:K indexes the set after that) and, when all tiers are "
                      "sparsity:S or level:K, their sparsities are config.sparsity.train_levels (the tiers "
                      "samplers) unless --config.sparsity.train_levels is given. With a tiers sampler a "
                      "bytes:F tier needs --config.sparsity.train_levels (it has no level before the "
                      "search) and a given train_levels must hold every other tier's sparsity.")
    flags.DEFINE_enum("quantization", "dynamic_int8", list(BUDGET_METRIC),
                      "Export mode (tflite_export/convert.py), or auto (per tier the smallest file passing "
                      "parity within 1.2x the fastest encode). With --sparse=auto only float32 files are "
                      "sparse-encoded (smaller with sparsity); int8 ones need --sparse=always (XNNPACK off).")
    flags.DEFINE_enum("sparse", "auto", ["auto", "never", "always"],
                      "Sparse encoding of the tier files: auto = only where smaller, right and "
                      "XNNPACK-runnable; always = also int8 files that need XNNPACK off (smaller, 3-5x "
                      "slower).")
    flags.DEFINE_integer("parity_utterances", 100, "Test utterances run through Keras and LiteRT per tier.")
    flags.DEFINE_integer("eval_utterances", 0, "Test utterances evaluated per sparsity level (the first N, "
                         "in whole batches; 0 = all).")
    flags.DEFINE_bool("compare_individual", False, "Also train individually pruned models at the tiers.")
    flags.DEFINE_enum("sparsity_granularity", None, list(structured.GRANULARITIES),
                      "Sets config.sparsity.granularity: weights (masks over weights / 1xN blocks) or "
                      "structured (whole heads, FFN units, conv channels, decoder units; tiers export as "
                      "smaller dense models). Default: the config's.")


@dataclasses.dataclass(frozen=True)
class Options:
    """What the end-to-end recipes share after the data is prepared.

    tiers: ``{name: TierSpec}``; each tier's budget is ``Supernet.budget`` of its spec, in the size metric of
    ``quantization`` (``sparsity.search_metric``). A name becomes a folder (``tiers/<name>``): ValueError
    unless ``omni_tf.fileio.check_name`` accepts it.
    """

    tiers: Mapping[str, TierSpec]
    max_minutes: float = 0.0
    quantization: str = "dynamic_int8"
    parity_utterances: int = 100
    eval_utterances: int = 0
    compare_individual: bool = False
    sparse: str = "auto"  # tflite_export sparse encoding: auto | never | always
    # More test splits reported beside ``test`` (``<data_dir>/<split>.tsv``), e.g. the demo's ``test_ood``.
    extra_tests: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in self.tiers:
            fileio.check_name(name, "tier name")

    @classmethod
    def from_flags(cls, flag_values: Any) -> Options:
        """From the flags of ``define_flags`` (and ``--max_minutes`` / ``--config``: ``budget_minutes``)."""
        f = flag_values
        return cls(f.tiers, budget_minutes(f), f.quantization, f.parity_utterances, f.eval_utterances,
                   f.compare_individual, f.sparse)

    def export_inputs(self) -> dict[str, Any]:
        """Stage inputs of an export (``sparse`` only when not the default, so older runs stay reusable)."""
        return {"q": self.quantization, "n": self.parity_utterances,
                **({"sparse": self.sparse} if self.sparse != "auto" else {})}

    def export_options(self, series: str) -> bundle.ExportOptions:
        return bundle.ExportOptions(self.quantization, self.sparse, series)


def train_seconds(train_metrics: Mapping[str, Any]) -> float:
    """A training stage's time over every invocation of its workdir (``trained_s``; records written before
    it existed: ``elapsed_s``, the last invocation's)."""
    return float(train_metrics.get("trained_s", train_metrics.get("elapsed_s", 0.0)))


def run_tiers(stages: Stages, out: str, config: ml_collections.ConfigDict, opts: Options
              ) -> tuple[list[dict], list[dict], dict]:
    """train omni -> budgets -> search -> evaluate -> export (-> individually pruned baselines).

    Returns (tier report rows, uniform-level rows, omni training metrics).
    """
    workdir = os.path.join(out, "train", "omni")
    c = run_config(config, "omni", config.training.max_steps, opts.max_minutes)
    train_metrics = train_stage(stages, "train", c, workdir)
    tiers = dict(opts.tiers)
    sized = stages.run("budgets", {"tiers": {t: str(s) for t, s in tiers.items()}, "q": opts.quantization,
                                   "bytes_on_disk": True},
                       lambda: tier_budgets(config, workdir, tiers, opts.quantization))
    budgets, metric = sized["budgets"], sized["metric"]
    settings = SparsitySettings.from_config(config.sparsity)
    search_inputs = {"budgets": budgets, **settings.search_kwargs(), "fitness": settings.search_fitness,
                     "dev_utterances": settings.search_dev_utterances}
    found = stages.run("search", search_inputs, lambda: search(
        config, workdir, budgets, os.path.join(out, "search"), metric))
    chosen = stages.run("choose", {}, lambda: choose(config, workdir, found, os.path.join(out, "search")))
    tier_configs = {t: chosen[t]["config"] for t in tiers}
    levels = stages.run("levels", {"n": opts.eval_utterances}, lambda: evaluate_levels(
        config, workdir, os.path.join(out, "eval", "omni"), configs=tier_configs,
        max_utterances=opts.eval_utterances))
    evals = {r["name"]: r for r in levels}
    extra = _extra_tests(stages, config, workdir, out, "omni", opts, tier_configs)
    tier_dir = os.path.join(out, "tiers")
    stages.run("export", opts.export_inputs(), lambda: export_tiers(
        config, workdir, tier_configs, tier_dir, opts.parity_utterances,
        opts.export_options(OMNI_SERIES)))
    seconds = train_seconds(train_metrics)
    rows = [{**report_row(load_manifests(os.path.join(tier_dir, t)), evals.get(t), seconds),
             "choice": chosen[t]["choice"], "choice_reason": chosen[t]["reason"]} for t in tiers]
    rows = [_with_extra(r, extra, r["tier"], "wer_keras_") for r in rows]
    level_rows = [_with_extra({**r, "series": OMNI_SERIES}, extra, r["name"], "wer_")
                  for r in levels if r["name"] not in tiers]
    if opts.compare_individual:
        for row in list(rows):
            more, more_levels = _individually_pruned(stages, out, config, opts,
                                                     row["tier"], row["sparsity"], int(train_metrics["step"]))
            rows.append(more)
            level_rows += more_levels
    return rows, level_rows, train_metrics


def _individually_pruned(stages: Stages, out: str, config: ml_collections.ConfigDict, opts: Options,
                         tier: str, sparsity: float, steps: int
                         ) -> tuple[dict, list[dict]]:
    """The baseline for one tier: a model pruned to the tier's sparsity, same loop and step budget."""
    workdir = os.path.join(out, "train", f"pruned_{tier}")
    c = run_config(config, "pruned", steps, 0.0, target_sparsity=round(float(sparsity), 4))
    metrics = train_stage(stages, f"train_pruned_{tier}", c, workdir)
    ev = stages.run(f"levels_pruned_{tier}", {"n": opts.eval_utterances}, lambda: evaluate_levels(
        c, workdir, os.path.join(out, "eval", f"pruned_{tier}"), max_utterances=opts.eval_utterances))
    extra = _extra_tests(stages, c, workdir, out, f"pruned_{tier}", opts, None)
    name = f"{tier}_pruned"
    stages.run(f"export_pruned_{tier}", opts.export_inputs(),
               lambda: export_tiers(c, workdir, {name: 1}, os.path.join(out, "tiers"),
                                    opts.parity_utterances, opts.export_options(PRUNED_SERIES)))
    row = report_row(load_manifests(os.path.join(out, "tiers", name)), ev[-1], train_seconds(metrics))
    row = _with_extra(row, extra, ev[-1]["name"], "wer_keras_")
    series = f"{PRUNED_SERIES} {tier}"
    return row, [_with_extra({**r, "series": series}, extra, r["name"], "wer_") for r in ev]


def _extra_tests(stages: Stages, config: ml_collections.ConfigDict, workdir: str, out: str, run: str,
                 opts: Options, configs: Mapping[str, Any] | None) -> dict[str, dict[str, dict]]:
    """``{split: {row name: eval row}}`` of ``workdir``'s levels (and ``configs``) on ``opts.extra_tests``."""
    found = {}
    for split in opts.extra_tests:
        rows = stages.run(f"levels_{run}_{split}", {"n": opts.eval_utterances}, lambda s=split:
                          evaluate_levels(config, workdir, os.path.join(out, "eval", f"{run}_{s}"),
                                          configs=configs, max_utterances=opts.eval_utterances, split=s))
        found[split] = {r["name"]: r for r in rows}
    return found


def _with_extra(row: dict[str, Any], extra: Mapping[str, Mapping[str, dict]], name: str, prefix: str
                ) -> dict[str, Any]:
    """``row`` plus ``<prefix><split>``: the WER of eval row ``name`` on each extra test split."""
    return {**row, **{f"{prefix}{split}": rows[name]["wer"] for split, rows in extra.items() if name in rows}}
