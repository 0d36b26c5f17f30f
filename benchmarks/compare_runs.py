"""Do two trained runs differ? WER of both at uniform sparsity levels with paired bootstrap intervals.

Usage (from the repository root; each run is a ``run_demo`` / ``run_recipe`` output dir, whose supernet is
``<dir>/train/omni``, or a training workdir itself: ``config.json`` + ``ckpt/``; or a shipped dense bundle,
below):
  python -m benchmarks.compare_runs --a=runs/demo --b=runs/demo_uniform
  python -m benchmarks.compare_runs --a=runs/demo --b=runs/demo_uniform --levels=0,0.6,0.75,0.9 \\
      --split=test --max_utterances=0 --out=runs/demo/compare
  python -m benchmarks.compare_runs --a=/path/to/bundle --b=demo_tiny --data_dir=runs/demo/data \\
      --split=test_ood

What it does: restores the latest checkpoint of each run with the config it was trained with (its
``config.json``), decodes greedily (Keras) at each of ``--levels`` (uniform sparsity; default: every level
both runs' supernets have, ``default_levels``: the dense 0 and, for runs of the end-to-end recipes, every
``sparsity:S`` tier, which the recipes add to the level set, whatever the sampler; a pruned run's levels are
0 and its target sparsity, so against it only those two) and reports per level WER A, WER B and A - B in
WER points with a 95 % paired bootstrap interval over the utterances (``omni_tf.metrics.bootstrap_wer_diff``,
``--bootstrap`` resamples, ``--bootstrap_seed``), with the verdict ``A better`` / ``B better`` (the
interval excludes 0) or ``tie``.

Same utterances: both runs are decoded on run A's ``--split`` manifest (its config's ``paths``). Run B's
manifest of that split must list the same utterances: the same ids, lengths, speakers and transcripts in
the same order (the audio path column is not compared: two demo outputs of the same corpus seed each hold
their own copy of the audio; B reads A's). Each run decodes with its own ``spm.model`` and ``cmvn.json``:
its weights emit the ids of its tokenizer and expect features normalised with its CMVN, so decoding B with
A's files would measure a broken model. Hypotheses are text, so the WERs stay comparable even when the
tokenizers differ; the references (each run's tokenizer round trip of the transcripts, as every WER table of
the project counts them) must then agree per utterance, else ValueError naming the utterance. Still, a
different test manifest, ``spm.model`` or ``cmvn.json`` (byte comparison) means the runs were prepared
from different data, so the difference would not be the training's alone: refused (ValueError naming both
files) unless ``--allow_different_data`` (then a warning), e.g. for a deliberate tokenizer comparison.

A level that is not in a run's supernet level set raises ValueError naming the run and its levels.
``--split``: test, dev or test_ood (``<manifest_dir>/test_ood.tsv``, the demo's out-of-domain split).

Shipped dense bundles (``omni_tf/training/pretrained.py``): ``--a`` / ``--b`` may be a folder holding
``bundle.json`` or a bundle name under ``omni_tf/resources/pretrained/`` (``pretrained.bundle_dir``). A bundle
has no training run, so ``--data_dir`` (a prepared dir with ``<split>.tsv``) gives the manifests it decodes:
required when a side is a bundle, refused (app.UsageError) otherwise. Its config (``bundle_config``) is its
``config.json`` without paths, through ``recipes.end_to_end.bundle_config`` as every run that starts from a
bundle (the bundle's model config), with ``--data_dir``'s manifests and the bundle's own ``spm.model`` /
``cmvn.json``; its weights are loaded into a fresh supernet (``pretrained.load_weights``). Default level:
0 only; ``--levels`` above 0 rank the dense weights by magnitude (uniform masks, no fine-tuning). The
same-data checks above apply unchanged (a bundle continued from another ships the same spm/cmvn bytes).
Tables name a bundle side ``bundle <name> (<steps> steps)`` (its ``bundle.json``).

Outputs under ``--out`` (default ``<a>/compare/``; a bundle A: ``runs/compare/<A>_vs_<B>/<split>``):
``decodes.json`` (hypotheses per run, keyed by the run's workdir, checkpoint step, manifest, utterance count
and level: a rerun decodes nothing it holds, a newer checkpoint is decoded again; a bundle's by
``bundle:<folder>@<hash of weights.npz>``, never a run's key), ``compare.md`` (the table, also printed)
and ``compare.json`` (rows and settings).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ml_collections
from absl import app, flags, logging

import omni_tf  # noqa: F401
from benchmarks import decodes
from omni_tf import fileio, metrics
from omni_tf.configs import experiment
from omni_tf.data import librispeech
from omni_tf.supernet import level_set
from omni_tf.training import checkpoint, pretrained, sources
from omni_tf.training import workdir as workdir_lib
from recipes import end_to_end as e2e

FLAGS = flags.FLAGS
LEVEL_TOLERANCE = 1e-6
DECODE_SAMPLER = "uniform"  # a bundle side's sampler: any that reads no train_levels (nothing is sampled)
TABLE_COLUMNS = ("level", "WER A", "WER B", "diff A-B [95% CI]", "verdict")
_STEP = re.compile(r"-(\d+)$")


@dataclass(frozen=True)
class Run:
    """One side: ``label`` (A / B), the path given, its training ``workdir`` and the config it trained
    with; for a shipped dense bundle (``load_bundle``) ``workdir`` is the bundle folder, ``config`` the one
    it is decoded with and ``bundle`` its ``bundle.json`` (None for a run)."""

    label: str
    given: str
    workdir: str
    config: ml_collections.ConfigDict
    bundle: Mapping[str, Any] | None = None


def training_workdir(path: str) -> str:
    """``path`` when it holds ``config.json`` (a training workdir), else ``<path>/train/omni`` (a run_demo /
    run_recipe output); absolute. FileNotFoundError naming both places when neither has a config."""
    for candidate in (path, os.path.join(path, "train", "omni")):
        if os.path.isfile(os.path.join(candidate, workdir_lib.CONFIG_FILE)):
            return os.path.abspath(candidate)
    raise FileNotFoundError(f"{path}: neither {path}/{workdir_lib.CONFIG_FILE} nor "
                            f"{path}/train/omni/{workdir_lib.CONFIG_FILE} exists: not a training workdir nor "
                            "a run_demo / run_recipe output")


def _tuples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def load_run(label: str, path: str) -> Run:
    """The run at ``path`` (``training_workdir``) with its recorded config; JSON lists become tuples, as
    every sequence field of the experiment config is one (``sparsity.levels``, ``data.speed_factors``...);
    a field added after the run was recorded gets the value it trained with
    (``workdir.with_added_fields``)."""
    workdir = training_workdir(path)
    with open(os.path.join(workdir, workdir_lib.CONFIG_FILE), encoding="utf-8") as f:
        config = ml_collections.ConfigDict(_tuples(workdir_lib.with_added_fields(json.load(f))))
    return Run(label, path, workdir, config)


def is_bundle(path: str) -> bool:
    """Whether ``path`` names a shipped dense bundle: a folder with ``bundle.json``, or a bundle name under
    ``omni_tf/resources/pretrained/`` (``pretrained.bundle_dir``)."""
    return os.path.isfile(os.path.join(pretrained.bundle_dir(path), "bundle.json"))


def bundle_config(path: str, data_dir: str, levels: Sequence[float] = ()) -> ml_collections.ConfigDict:
    """The config a bundle is decoded with: its ``config.json`` (the experiment config it trained with: its
    data section makes the features its weights expect) without its paths, through
    ``recipes.end_to_end.bundle_config`` (the bundle's model config, ``training.init_from``: as every run
    that starts from a bundle), reading the manifests of the prepared ``data_dir``
    (``experiment.with_data_dir``; ``<data_dir>/<split>.tsv``) with the bundle's own ``spm.model`` and
    ``cmvn.json`` (its weights emit its tokenizer's ids and expect its CMVN).

    Mode dense (sparsity 0 only) unless ``levels`` holds a level > 0: then mode omni with the level set
    ``{0} | levels`` (uniform magnitude masks on the dense weights: ``decodes.bundle_supernet``). The tiers
    the bundle's run trained do not apply: ``train_levels`` and ``tier_weights`` are emptied and the sampler
    is ``DECODE_SAMPLER`` (decoding samples nothing; a tiers sampler would need train_levels).
    FileNotFoundError naming a missing bundle folder or file; ValueError for levels outside [0, 1)."""
    path = pretrained.bundle_dir(path)
    pretrained.check_bundle(path)
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:  # maybe older than ADDED_FIELDS
        base = ml_collections.ConfigDict(_tuples(workdir_lib.with_added_fields(json.load(f))))
    with base.unlocked():
        base.paths = experiment.get_config().paths
    c, path, _ = e2e.bundle_config(base, path)
    with c.unlocked():
        c.paths.spm_model, c.paths.cmvn = (os.path.join(path, n) for n in pretrained.DATA_FILES)
        wanted = sorted({0.0, *(float(s) for s in levels)})
        c.training.mode = "omni" if len(wanted) > 1 else "dense"
        # the levels asked, not the tiers the bundle's run trained: its train_levels go, and with them what
        # reads them (every Supernet checks tier_weights against train_levels; a tiers sampler needs some)
        c.sparsity.levels, c.sparsity.train_levels, c.sparsity.tier_weights = tuple(wanted), (), ()
        c.sparsity.sampler = DECODE_SAMPLER
    return experiment.with_data_dir(c, data_dir, source="--data_dir")


def load_bundle(label: str, path: str, data_dir: str, levels: Sequence[float] = ()) -> Run:
    """The shipped dense bundle ``path`` (a folder or a name under ``omni_tf/resources/pretrained/``) as a
    side, decoded with ``bundle_config``. Raises what ``bundle_config`` raises."""
    folder = os.path.abspath(pretrained.bundle_dir(path))
    config = bundle_config(folder, data_dir, levels)
    return Run(label, path, folder, config, pretrained.check_bundle(folder))


def bundle_steps(info: Mapping[str, Any]) -> str:
    """The training steps of a bundle's ``bundle.json``: ``total_steps`` (a chain of bundles), else
    ``steps`` (``6000+16454`` for a list of stages)."""
    steps = info.get("total_steps", info.get("steps", "?"))
    return "+".join(str(s) for s in steps) if isinstance(steps, list | tuple) else str(steps)


def side_name(run: Run) -> str:
    """How tables name a side: the path given, or for a bundle ``bundle <name> (<steps> steps)``."""
    if run.bundle is None:
        return run.given
    name = run.bundle.get("name", os.path.basename(run.workdir))
    return f"bundle {name} ({bundle_steps(run.bundle)} steps)"


def run_levels(config: ml_collections.ConfigDict) -> tuple[float, ...]:
    """The uniform sparsities a run's checkpoint can decode at: its supernet level set (mode dense: 0)."""
    t = config.training
    return level_set(t.mode, config.sparsity.levels, config.sparsity.target_sparsity) or (0.0,)


def default_levels(runs: Sequence[Run]) -> tuple[float, ...]:
    """The levels both (all) runs can decode at, ascending: the common part of their level sets
    (``run_levels``; a pruned run: ``(0, target)``, dense: ``(0,)``). It holds every tier a run trained as
    a uniform level (the recipes add each ``sparsity:S`` tier to the level set,
    ``omni_tf.supernet.with_tier_levels``) whatever the sampler, unlike ``sparsity.train_levels``, which
    only the ``tiers`` samplers read. ValueError naming each run's levels when they have none in common."""
    common = list(run_levels(runs[0].config))
    for r in runs[1:]:
        have = run_levels(r.config)
        common = [s for s in common if any(abs(s - h) <= LEVEL_TOLERANCE for h in have)]
    if not common:
        raise ValueError("the runs have no sparsity level in common ("
                         + "; ".join(f"{r.label}: {list(run_levels(r.config))}" for r in runs)
                         + "): give --levels")
    return tuple(sorted(common))


def check_levels(run: Run, levels: Sequence[float]) -> None:
    """ValueError naming the run and its level set when a level is not in it."""
    have = run_levels(run.config)
    missing = [s for s in levels if all(abs(s - h) > LEVEL_TOLERANCE for h in have)]
    if missing:
        raise ValueError(f"run {run.label} ({run.given}): sparsity {missing} not a level of its supernet; "
                         f"its levels are {list(have)} (training.mode {run.config.training.mode})")


def _rows(manifest: str) -> list[tuple]:
    """The utterances of a manifest without the audio path column."""
    keep = [c for c in librispeech.MANIFEST_COLUMNS if c != "path"]
    return [tuple(r[c] for c in keep) for r in librispeech.read_manifest(manifest)]


def _bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def data_differences(a: Run, b: Run, split: str) -> list[str]:
    """How run B's data differs from A's: its ``split`` manifest lists other utterances, or its spm.model
    / cmvn.json are other bytes; [] when the same. FileNotFoundError naming a missing file."""
    out = []
    ma, mb = sources.manifest_path(a.config, split), sources.manifest_path(b.config, split)
    if os.path.realpath(ma) != os.path.realpath(mb) and _rows(ma) != _rows(mb):
        out.append(f"{split} manifest {ma} (A) and {mb} (B) list different utterances")
    for kind, fa, fb in zip(("spm.model", "cmvn.json"), sources.spm_cmvn_paths(a.config),
                            sources.spm_cmvn_paths(b.config), strict=True):
        if _bytes(fa) != _bytes(fb):
            out.append(f"{kind} {fa} (A) and {fb} (B) differ")
    return out


def checkpoint_step(run: Run) -> int:
    """The step of the checkpoint a restore reads (``checkpoint.newest_readable``); FileNotFoundError
    naming the run when it has none."""
    prefix = checkpoint.newest_readable(os.path.join(run.workdir, checkpoint.CKPT_SUBDIR))
    if prefix is None:
        raise FileNotFoundError(f"run {run.label} ({run.given}): no checkpoint in {run.workdir}/ckpt")
    m = _STEP.search(prefix)
    return int(m.group(1)) if m else -1


def decode_key(run: Run) -> str:
    """What a side's cached decodes are keyed by: ``<workdir>@<checkpoint step>`` for a run,
    ``bundle:<folder>@<sha256 of weights.npz, 16 hex>`` for a bundle (never a run's key; rewritten weights
    are decoded again)."""
    if run.bundle is None:
        return f"{run.workdir}@{checkpoint_step(run)}"
    with open(os.path.join(run.workdir, "weights.npz"), "rb") as f:
        return f"bundle:{run.workdir}@{hashlib.sha256(f.read()).hexdigest()[:16]}"


def level_name(s: float) -> str:
    return f"{s:g}"


def decode(results: decodes.Results, run: Run, manifest: str, levels: Sequence[float], utterances: int
           ) -> dict[str, dict[str, Any]]:
    """``{level name: {wer, ids, refs, hyps, utterances}}`` of ``run`` on ``manifest`` (its own tokenizer and
    CMVN), cached in ``results`` under ``decode_key`` (a run's workdir and checkpoint step, a bundle's
    folder and weights), manifest, count and level."""
    key = f"{decode_key(run)}|{os.path.abspath(manifest)}|{utterances}"
    named = {level_name(s): float(s) for s in levels}
    todo = [n for n in named if results.get("evals", f"{key}/{n}") is None]
    data = decodes.test_batches(run.config, manifest, utterances) if todo else None
    return decodes.decode_levels(results, run.workdir, key, run.config, named, data,
                                 bundle=run.workdir if run.bundle is not None else "")


def paired(level: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[list, list, list]:
    """(references, hypotheses A, hypotheses B) in A's utterance order. ValueError when the runs decoded
    other utterances or their references (tokenizer round trips of the transcripts) differ."""
    if sorted(a["ids"]) != sorted(b["ids"]):
        raise ValueError(f"level {level}: runs A and B decoded different utterances ({len(a['ids'])} vs "
                         f"{len(b['ids'])}; their data configs batch the split differently: use "
                         "--max_utterances=0)")
    by_id = {i: (r, h) for i, r, h in zip(b["ids"], b["refs"], b["hyps"], strict=True)}
    for i, ref in zip(a["ids"], a["refs"], strict=True):
        if metrics.normalize(ref) != metrics.normalize(by_id[i][0]):
            raise ValueError(f"utterance {i}: the tokenizers of runs A and B give different references "
                             f"({ref!r} vs {by_id[i][0]!r}): their WERs would count different words")
    return list(a["refs"]), list(a["hyps"]), [by_id[i][1] for i in a["ids"]]


def compare(a: Run, b: Run, levels: Sequence[float] | None, out: str, split: str = "test",
            utterances: int = 0, bootstrap: int = 1000, seed: int = 0, allow_different_data: bool = False
            ) -> list[dict[str, Any]]:
    """One row per level: ``level``, ``wer_a``, ``wer_b``, ``diff`` (A - B, fractions), ``diff_lo`` /
    ``diff_hi`` (95 % paired bootstrap interval), ``verdict``, ``utterances``. Decodes are cached in
    ``<out>/decodes.json``. Raises ValueError (module docstring): a level not in a run, different data
    without ``allow_different_data``, runs that decoded different utterances or references."""
    levels = default_levels([a, b]) if not levels else tuple(float(s) for s in levels)
    for run in (a, b):
        check_levels(run, levels)
    differences = data_differences(a, b, split)
    if differences and not allow_different_data:
        raise ValueError(f"runs {a.given} and {b.given} were prepared from different data: "
                         f"{'; '.join(differences)}. Pass --allow_different_data to compare them anyway "
                         "(both decode A's utterances, each with its own tokenizer and CMVN)")
    for d in differences:
        logging.warning("--allow_different_data: %s", d)
    manifest = sources.manifest_path(a.config, split)
    results = decodes.Results(os.path.join(out, "decodes.json"))
    ev_a, ev_b = (decode(results, r, manifest, levels, utterances) for r in (a, b))
    rows = []
    for level in ev_a:
        refs, hyps_a, hyps_b = paired(level, ev_a[level], ev_b[level])
        diff, lo, hi = metrics.bootstrap_wer_diff(refs, hyps_a, hyps_b, n=bootstrap, seed=seed)
        rows.append({"level": level, "wer_a": ev_a[level]["wer"], "wer_b": ev_b[level]["wer"], "diff": diff,
                     "diff_lo": lo, "diff_hi": hi, "verdict": decodes.verdict(lo, hi, "A", "B"),
                     "utterances": len(refs)})
    return rows


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table: WERs in %, A - B in WER points with its interval, the verdict."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for r in rows:
        ci = f"{100 * r['diff']:+.1f} [{100 * r['diff_lo']:+.1f}, {100 * r['diff_hi']:+.1f}]"
        lines.append(f"| {r['level']} | {100 * r['wer_a']:.1f} % | {100 * r['wer_b']:.1f} % | {ci} | "
                     f"{r['verdict']} |")
    return "\n".join(lines) + "\n"


def report(rows: Sequence[Mapping[str, Any]], a: Run, b: Run, out: str, settings: Mapping[str, Any]) -> str:
    """Writes ``<out>/compare.md`` and ``compare.json``; returns the markdown. A bundle side is named by its
    ``bundle.json`` name and steps (``side_name``)."""
    steps = {r.label: checkpoint_step(r) if r.bundle is None else bundle_steps(r.bundle) for r in (a, b)}
    where = {r.label: f"`{r.workdir}` step {steps[r.label]}" if r.bundle is None else
             f"{side_name(r)} `{r.workdir}`" for r in (a, b)}
    text = (f"# {side_name(a)} (A) vs {side_name(b)} (B)\n\nA: {where['A']}; B: {where['B']}. "
            f"Greedy decoding of the {settings['split']} manifest `{settings['manifest']}` "
            f"({rows[0]['utterances'] if rows else 0} utterances) at uniform sparsity levels; diff = WER A - "
            f"WER B in points with a 95 % paired bootstrap interval over utterances ({settings['bootstrap']} "
            f"resamples, seed {settings['seed']}); a verdict only when the interval excludes 0.\n\n"
            f"{markdown(rows)}\nCommand: `{settings['command']}`\n")
    fileio.write_text(os.path.join(out, "compare.md"), text)
    sides = {k: {"given": r.given, "workdir": r.workdir, "step": steps[r.label],
                 **({} if r.bundle is None else {"bundle": r.bundle.get("name", "")})}
             for k, r in (("a", a), ("b", b))}
    fileio.write_json(os.path.join(out, "compare.json"), {**sides, **settings, "rows": list(rows)})
    return text


def compare_and_report(a: Run, b: Run, out: str, command: str, levels: Sequence[float] = (),
                       split: str = "test", max_utterances: int = 0, bootstrap: int = 1000, seed: int = 0,
                       allow_different_data: bool = False) -> str:
    """``compare`` then ``report`` (the settings recorded with ``command``, the command line that ran it);
    returns the markdown. Raises what ``compare`` raises."""
    rows = compare(a, b, levels, out, split, max_utterances, bootstrap, seed, allow_different_data)
    settings = {"split": split, "manifest": sources.manifest_path(a.config, split),
                "max_utterances": max_utterances, "bootstrap": bootstrap, "seed": seed,
                "allow_different_data": allow_different_data, "command": command}
    return report(rows, a, b, out, settings)


def define_compare_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """The flags of what is decoded and how it is compared: ``--levels``, ``--split``, ``--max_utterances``,
    ``--bootstrap``, ``--bootstrap_seed`` (also ``benchmarks.retrain --compare``'s; ``compare_flag_values``
    reads them)."""
    fv = flag_values
    flags.DEFINE_list("levels", [], "Uniform sparsity levels compared (default: every level both runs' "
                      "supernets have, the sparsity:S tiers of the recipes' runs included; a pruned run: 0 "
                      "and its target).", flag_values=fv)
    flags.DEFINE_enum("split", "test", ["test", "dev", "test_ood"], "The split of run A's config both runs "
                      "decode (test_ood: <manifest_dir>/test_ood.tsv, the demo's out-of-domain split).",
                      flag_values=fv)
    flags.DEFINE_integer("max_utterances", 0, "Decode only the first utterances of --split (whole batches; "
                         "0 = the whole split).", flag_values=fv)
    flags.DEFINE_integer("bootstrap", 1000, "Bootstrap resamples per WER difference.", flag_values=fv)
    flags.DEFINE_integer("bootstrap_seed", 0, "Seed of the bootstrap resamples.", flag_values=fv)


def compare_flag_values(flag_values: flags.FlagValues = FLAGS) -> dict[str, Any]:
    """The parsed ``define_compare_flags`` as ``compare_and_report`` keyword arguments."""
    fv = flag_values
    return {"levels": [float(s) for s in fv.levels], "split": fv.split, "max_utterances": fv.max_utterances,
            "bootstrap": fv.bootstrap, "seed": fv.bootstrap_seed}


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """The command line's flags (in ``flag_values``); defined when run as a script only, so that importing
    this module (tests) does not clash with the flags of other benchmarks and recipes (``--out``...) in the
    same process. The bootstrap's seed is ``--bootstrap_seed``: ``--seed`` is a corpus seed in the
    recipes (``run_demo``, ``make_corpus``, ``pretrain``)."""
    fv = flag_values
    flags.DEFINE_string("a", None, "Run A: a run_demo / run_recipe output dir (train/omni), a training "
                        "workdir (config.json + ckpt/), or a shipped dense bundle (a folder with "
                        "bundle.json, or a name under omni_tf/resources/pretrained/).", flag_values=fv)
    flags.DEFINE_string("b", None, "Run B, as --a.", flag_values=fv)
    flags.DEFINE_string("data_dir", "", "A prepared dir (<split>.tsv) whose manifests a bundle side decodes "
                        "(with the bundle's own spm.model / cmvn.json); required when --a or --b is a "
                        "bundle, refused otherwise.", flag_values=fv)
    flags.DEFINE_string("out", "", "Output directory (default <a>/compare; a bundle A: "
                        "runs/compare/<A>_vs_<B>/<split>).", flag_values=fv)
    flags.DEFINE_bool("allow_different_data", False, "Compare runs whose test manifest, spm.model or "
                      "cmvn.json differ (each run still decodes A's utterances with its own tokenizer and "
                      "CMVN).", flag_values=fv)
    define_compare_flags(fv)


def load_sides(a: str, b: str, data_dir: str, levels: Sequence[float] = ()) -> tuple[Run, Run]:
    """Runs A and B of ``--a`` / ``--b``: a bundle (``is_bundle``) by ``load_bundle`` on ``data_dir``, else
    ``load_run``. app.UsageError when a side is a bundle and ``data_dir`` is empty, or no side is one and it
    is set; FileNotFoundError naming ``<data_dir>`` when it is not a folder."""
    bundles = [p for p in (a, b) if is_bundle(p)]
    if bundles and not data_dir:
        raise app.UsageError(f"{' and '.join(bundles)}: a shipped bundle has no data of its own: give "
                             "--data_dir, a prepared dir holding <split>.tsv")
    if data_dir and not bundles:
        raise app.UsageError(f"--data_dir={data_dir} is for a bundle side only: runs --a / --b decode the "
                             "manifests of their own config")
    if data_dir and not os.path.isdir(data_dir):
        raise FileNotFoundError(f"--data_dir {data_dir}: no such folder")
    return tuple(load_bundle(label, p, data_dir, levels) if is_bundle(p) else load_run(label, p)
                 for label, p in (("A", a), ("B", b)))


def default_out(a: Run, b: Run, split: str) -> str:
    """``--out``'s default: ``<a>/compare`` for a run A; for a bundle A (whose folder is a shipped artifact,
    not a place for outputs) ``runs/compare/<A>_vs_<B>/<split>`` (bundle.json names, a run's folder name)."""
    if a.bundle is None:
        return os.path.join(a.given, "compare")
    name = {r.label: r.bundle.get("name", os.path.basename(r.workdir)) if r.bundle is not None else
            os.path.basename(os.path.normpath(r.given)) for r in (a, b)}
    return os.path.join("runs", "compare", f"{name['A']}_vs_{name['B']}", split)


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.INFO)
    if not FLAGS.a or not FLAGS.b:
        raise app.UsageError("--a and --b are required")
    settings = compare_flag_values()
    a, b = load_sides(FLAGS.a, FLAGS.b, FLAGS.data_dir, settings["levels"])
    out = os.path.abspath(FLAGS.out or default_out(a, b, settings["split"]))
    command = " ".join(["python -m benchmarks.compare_runs", *sys.argv[1:]])
    print(compare_and_report(a, b, out, command, allow_different_data=FLAGS.allow_different_data,
                             **settings), flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main)
