"""Omni supernet vs individually pruned models at the device tiers: learning curves at two protocols.

Usage (from the repository root; ``--data_dir`` is a prepared corpus, e.g. ``runs/demo/data`` of
``make demo``; run one job at a time, niced, it trains for hours at the longer budgets):
  nice -n 10 python -m benchmarks.omni_vs_pruned --data_dir=runs/demo/data --out=runs/compare \
      --step_budgets=800,2500,6000 --tiers=speaker=sparsity:0.6,phone=sparsity:0.75,wearable=sparsity:0.9
  nice -n 10 python -m benchmarks.omni_vs_pruned --data_dir=runs/demo/data --pretrained=BUNDLE \
      --out=runs/compare_shipped --step_budgets=800,2500      # both sides from a shipped dense model
  nice -n 10 python -m benchmarks.omni_vs_pruned --data_dir=runs/demo/data --out=runs/compare \
      --step_budgets=800,2500 --omni_variants=base,uniform,tiers_random,tiers_random_kd  # omni strategies
  python -m benchmarks.omni_vs_pruned --smoke --compute_unit=steps --out=/tmp/compare_smoke  # ~1 min

Sides and protocols (the comparison of the Omni-sparsity DNN paper, Wu et al. 2021: one supernet vs one
model pruned per sparsity, same recipe). For every budget ``B`` (steps):
- ``omni``: one supernet per omni variant (``training.mode=omni``) trained for ``B`` steps; each tier is
  its uniform level at the tier's sparsity (the tier sparsities are added to the supernet's level set).
  The tier sparsities are also its ``sparsity.train_levels`` (the levels the ``tiers`` samplers train)
  unless ``--config.sparsity.train_levels`` is given: that value is kept (as in the end-to-end recipes),
  and with a ``tiers`` / ``tiers_random`` sampler it must hold every tier's sparsity (ValueError naming the
  flag and the missing level, raised before any run trains).
- protocol ``steps`` (the paper's): one model per tier (``training.mode=pruned`` at the tier's sparsity),
  each trained for the same ``B`` steps.
- protocol ``compute``: the pruned models together get omni's training compute. ``--compute_unit=cpu``: each
  gets ``1 / num_tiers`` of the omni run's process CPU-seconds, converted to steps with that tier's
  CPU-seconds per step measured in its protocol-``steps`` run at the same budget; ``--compute_unit=steps``:
  each gets ``B / num_tiers`` steps.

Omni variants (``--omni_variants``, a list; default ``base``): supernet training strategies compared against
the same pruned runs. A variant changes only ``sparsity.*`` fields of the omni runs' config; the pruned runs
are built from the base config, so their digests and cached runs are the same whatever variants are asked
for. An item is one of
- ``base``: the config as given; runs ``omni_s{B}`` (the names of a driver without variants).
- a registered name (``OMNI_VARIANTS``): ``uniform``, ``sandwich``, ``tiers``, ``tiers_random`` (that
  ``sparsity.sampler``, ``omni_tf/sparsity/sampling.py``) and ``tiers_random_kd`` (``tiers_random`` with
  in-place distillation, ``distill_weight=0.5``, ``distill_mode=mix``, ``omni_tf/training/distill.py``).
- ``name=field:value+field:value``: a new name (lower case, digits, ``_``; not ``base`` nor a registered
  name) for the given ``sparsity`` fields, each value parsed as the field's type (bool ``true``/``false``;
  of the tuple fields only ``tier_weights``, its numbers separated by ``/`` in ``train_levels`` order, i.e.
  ascending tier sparsity), e.g. ``kd03=sampler:tiers_random+distill_weight:0.3+distill_mode:mix`` or
  ``tiersw=sampler:tiers+distill_weight:0.5+distill_mode:mix+tier_weights:1/1/2`` (the sparsest of three
  tiers at twice the weight).
Named variants train runs ``omni_<name>_s{B}``. Unknown names, fields or samplers, distillation settings
``omni_tf.training.distill.check`` refuses and ``tier_weights`` that do not fit the sampler or the tiers
(``omni_tf.sparsity.sampling.check_tier_weights``, checked before any run trains) raise ValueError naming
them. With several variants, protocol
``compute`` splits each variant's own CPU time, so each variant has its own pruned compute runs (named by
their steps, hence shared when two variants give the same steps); the table's ``omni`` column says which
variant each row compares against.

Both sides start from the same initial weights (``training.seed``, or with ``--pretrained`` the shipped dense
model, ``training.init_from``, with the ``finetune`` schedule: ``recipes.end_to_end.shipped_config``, as
``run_demo --init=shipped``; not its ``tier_sandwich`` sampler variant: the sampler is the config's or an
``--omni_variants`` one, e.g. ``tkd=sampler:tiers+distill_weight:0.5+distill_mode:mix``) and use the same
loop (``omni_tf.training.loop.train``), data and schedule shape. With ``--pretrained`` the runs read the
bundle's SentencePiece model and CMVN (the labels and features its weights were trained with;
``pretrained_inputs``): ``--data_dir`` as given when its ``spm.model`` /
``cmvn.json`` are the bundle's (e.g. ``runs/demo/data_shipped``), else (e.g. ``runs/demo/data``) a copy of its
manifests with the bundle's files in ``<out>/data_shipped``, as ``run_demo --init=shipped`` makes; an
explicit ``--config.paths.spm_model`` / ``cmvn`` of other files is refused (ValueError naming both files).

Schedules and resuming between budgets (whatever the sampler: uniform, sandwich, ...): the cosine learning
rate ends at ``max_steps`` and the sparsity ramp (``sparsity.begin_step``/``end_step``/``frequency``) is
placed at the same fractions of every budget as in the config (relative to its ``training.max_steps``), so
each budget is a complete run (rate decayed, masks frozen and fine-tuned). Such a run cannot continue
another budget's run, so each budget trains from scratch. Only when no schedule depends on its horizon
(``training.decay=constant``, or ``eden`` with ``eden_progress=0``, and ``--noscale_schedule``, so the ramp
is the same absolute steps at every budget: ``horizon_free``) does a budget start from a copy of the final
checkpoint of the same side's longest shorter run; its cost then includes that run's.

Cost per run: process CPU time (``time.process_time``: all threads of this process) and wall time of the
training call, and the 1/5/15-minute load average at its end (other jobs on the machine slow the wall clock,
not the CPU time). A run interrupted and resumed counts only the CPU time of its completing invocation (the
loop's ``trained_s`` counts every invocation's wall time and is reported too).

Outputs under ``--out``: ``train/<run>/`` (checkpoints), ``results.json`` (every finished run and evaluation,
written after each one; a rerun skips what it holds and resumes an interrupted training from its checkpoint),
``RESULTS.md`` (tables) and ``curves.png`` (WER vs steps per model, and vs the CPU-minutes each side spent).
For each budget, protocol, omni variant and tier: WER of both sides on the test split and the difference
omni - pruned with a 95 % paired bootstrap interval over test utterances
(``omni_tf.metrics.bootstrap_wer_diff``).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

import omni_tf  # noqa: F401
from benchmarks.decodes import Results, decode_levels, test_batches, verdict
from omni_tf import fileio, metrics
from omni_tf.configs import experiment
from omni_tf.sparsity.sampling import SAMPLERS
from omni_tf.supernet import TierSpec, with_tier_levels
from omni_tf.training import distill, loop, pretrained, sources
from omni_tf.training import workdir as workdir_lib
from recipes import end_to_end as e2e
from recipes.tier_flags import define_tiers_flag

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", f"{experiment.__file__}:tiny,demo", "Experiment config.",
                                lock_config=True)
flags.DEFINE_string("data_dir", None, "Prepared directory: <split>.tsv manifests, cmvn.json, "
                    "spm.model (experiment.with_data_dir: a --config.paths.* file given too wins unless the "
                    "program names that file).")
flags.DEFINE_string("out", None, "Output directory (reused: finished runs and evaluations are skipped).")
flags.DEFINE_list("step_budgets", ["800", "2500"], "Training steps per model, ascending (not a size budget).")
define_tiers_flag(["speaker=sparsity:0.6", "phone=sparsity:0.75", "wearable=sparsity:0.9"],
                  "Device tiers, each a uniform sparsity (added to omni's level set).", kinds=("sparsity",))
flags.DEFINE_list("omni_variants", ["base"], "Omni training strategies compared against the same "
                  "pruned runs: base (the config as given), a registered name (uniform, sandwich, tiers, "
                  "tiers_random, tiers_random_kd) or name=field:value+field:value of sparsity fields "
                  "(module docstring).")
flags.DEFINE_list("protocols", ["steps", "compute"], "steps (same steps per model) and/or compute.")
flags.DEFINE_enum("compute_unit", "cpu", ["cpu", "steps"], "How protocol compute splits omni's budget.")
flags.DEFINE_bool("scale_schedule", True, "Place the sparsity ramp at the config's fractions of each budget.")
flags.DEFINE_integer("eval_utterances", 0, "Test utterances evaluated per sparsity level (the first N, "
                     "in whole batches; 0 = all).")
flags.DEFINE_integer("bootstrap", 1000, "Bootstrap resamples per WER difference.")
flags.DEFINE_string("pretrained", "", "Start both sides from this shipped dense bundle (a name under "
                    "omni_tf/resources/pretrained/ or a path; its model config replaces config.model and "
                    "the finetune config variant is added, as run_demo --init=shipped does, not its "
                    "tier_sandwich: --omni_variants choose the sampler); the runs "
                    "read the bundle's spm.model / cmvn.json: --data_dir's own when they are the same "
                    "bytes, else a copy of its manifests with the bundle's files in <out>/data_shipped. "
                    "Empty: random initial weights (training.seed).")
flags.DEFINE_bool("smoke", False, "One-layer model (other config fields as given), tiny corpus (made "
                  "under --out when --data_dir is unset), step budgets 1,2: the whole driver in about a "
                  "minute (with --compute_unit=steps every compute run is a steps run).")
# --out is checked in main, not marked required: the tests import this module into a process whose global
# FLAGS other recipes' tests parse, and a required-flag validator here would fail their parsing.

PROTOCOLS = ("steps", "compute")
BASE_VARIANT = "base"
OMNI_SAMPLERS = tuple(s for s in SAMPLERS if s not in ("fixed", "dense"))  # the others are pruned/dense modes
OMNI_VARIANTS: dict[str, dict[str, Any]] = {
    "uniform": {"sampler": "uniform"},
    "sandwich": {"sampler": "sandwich"},
    "tiers": {"sampler": "tiers"},
    "tiers_random": {"sampler": "tiers_random"},
    "tiers_random_kd": {"sampler": "tiers_random", "distill_weight": 0.5, "distill_mode": "mix"},
}
# Tuple fields a variant may set, written with '/' between the values (--omni_variants is a comma list):
# sparsity.levels / train_levels come from --tiers and --config.
VARIANT_TUPLE_FIELDS = ("tier_weights",)
SMOKE_MODEL = {"d_model": 32, "num_layers": 1, "num_heads": 2, "ff_dim": 64, "vocab_size": 30,
               "pred_hidden": 32, "joint_dim": 32, "pred_embed_dim": 16, "subsampling_factor": 8}


# -- configs ------------------------------------------------------------------------------------------------
def tier_sparsities(tiers: Mapping[str, Any]) -> dict[str, float]:
    """``{name: TierSpec of kind sparsity}`` (``--tiers``) -> ``{name: sparsity}``; ValueError unless
    0 < sparsity < 1."""
    out = {}
    for name, spec in tiers.items():
        if spec.kind != "sparsity" or not 0.0 < float(spec.value) < 1.0:
            raise ValueError(f"--tiers wants name=sparsity:S with 0 < S < 1, got {name}={spec}")
        out[name] = float(spec.value)
    return out


def horizon_free(config: ml_collections.ConfigDict, scale_schedule: bool) -> bool:
    """True when no schedule of a run depends on its ``max_steps``, so a longer budget may continue a shorter
    one's checkpoint: constant (or horizon-free Eden) learning rate and an unscaled sparsity ramp."""
    t = config.training
    rate_free = t.decay == "constant" or (t.decay == "eden" and float(t.eden_progress) == 0.0)
    return rate_free and not scale_schedule


def run_config(config: ml_collections.ConfigDict, mode: str, steps: int, tiers: Mapping[str, float],
               sparsity: float | None, scale_schedule: bool, keep: Sequence[str] = ()
               ) -> ml_collections.ConfigDict:
    """The config of one run: ``mode`` (omni | pruned at ``sparsity``), ``steps`` steps, no time budget.

    The tier sparsities join the level set and are the ``tiers`` samplers' ``train_levels``
    (``omni_tf.supernet.with_tier_levels``, as in the end-to-end recipes) unless ``keep`` (the command
    line's ``--config.*`` fields, ``recipes.end_to_end.config_overrides``) names ``sparsity.train_levels``:
    an omni run then trains the given levels, and with a tiers sampler raises ValueError naming
    ``--config.sparsity.train_levels`` and the tier level it lacks. A pruned run does not read
    ``train_levels`` (it trains its one level), so it ignores ``keep`` and its config, digest and cached run
    are the same with or without the flag. With ``scale_schedule`` the sparsity ramp sits at the same
    fractions of ``steps`` as of the config's ``training.max_steps``.
    """
    c = with_tier_levels(config, {t: TierSpec("sparsity", s) for t, s in tiers.items()},
                         keep if mode == "omni" else ())
    with c.unlocked():
        base = int(c.training.max_steps)
        c.training.mode, c.training.max_steps, c.training.max_minutes = mode, int(steps), 0.0
        c.training.checkpoint_every = max(1, min(int(c.training.checkpoint_every), steps))
        if sparsity is not None:
            c.sparsity.target_sparsity = float(sparsity)
        if scale_schedule:
            sp = c.sparsity
            sp.begin_step = round(sp.begin_step * steps / base)
            sp.end_step = max(sp.begin_step + 1, round(sp.end_step * steps / base))
            sp.frequency = max(1, round(sp.frequency * steps / base))
    return c


def _field_value(sparsity: ml_collections.ConfigDict, field: str, text: str, item: str) -> Any:
    """``text`` parsed as the type of ``sparsity.<field>``; ValueError naming ``item`` when it cannot be."""
    if field not in sparsity:
        raise ValueError(f"--omni_variants {item!r}: sparsity has no field {field!r}")
    old = sparsity[field]
    if isinstance(old, (tuple, list)):
        if field not in VARIANT_TUPLE_FIELDS:
            raise ValueError(f"--omni_variants {item!r}: tuple field sparsity.{field} cannot be set by a "
                             f"variant (only {', '.join(VARIANT_TUPLE_FIELDS)})")
        try:
            return tuple(float(x) for x in text.split("/")) if text else ()
        except ValueError:
            raise ValueError(f"--omni_variants {item!r}: sparsity.{field} wants numbers separated by '/' "
                             f"(e.g. {field}:1/1/2), got {text!r}") from None
    try:
        if isinstance(old, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        return type(old)(text)
    except ValueError:
        raise ValueError(f"--omni_variants {item!r}: sparsity.{field} wants a {type(old).__name__}, "
                         f"got {text!r}") from None


def parse_omni_variants(items: Sequence[str], sparsity: ml_collections.ConfigDict
                        ) -> dict[str, dict[str, Any]]:
    """``--omni_variants`` items -> ``{name: {sparsity field: value}}`` in the given order (module docstring
    for the syntax; ``base`` maps to ``{}``). ``sparsity``: the base config's section (field names, types).

    Raises ValueError naming the item for an empty list, a duplicate or malformed name, an unknown
    registered name, field or sampler (``OMNI_SAMPLERS``), a value of the wrong type, or distillation
    settings ``omni_tf.training.distill.check`` refuses.
    """
    if not items:
        raise ValueError("--omni_variants is empty: give base or variant names")
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, eq, spec = item.strip().partition("=")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"--omni_variants {item!r}: a name is lower case letters, digits and _")
        if name in out:
            raise ValueError(f"--omni_variants {item!r}: variant {name!r} given twice")
        if not eq:
            if name != BASE_VARIANT and name not in OMNI_VARIANTS:
                raise ValueError(f"--omni_variants: unknown variant {name!r} (known: {BASE_VARIANT}, "
                                 f"{', '.join(OMNI_VARIANTS)}; or name=field:value+field:value)")
            out[name] = dict(OMNI_VARIANTS.get(name, {}))
            continue
        if name == BASE_VARIANT or name in OMNI_VARIANTS:
            raise ValueError(f"--omni_variants {item!r}: {name!r} is a registered variant; name yours "
                             "otherwise")
        fields = {}
        for part in spec.split("+"):
            field, colon, text = part.partition(":")
            if not colon or not field or field in fields:
                raise ValueError(f"--omni_variants {item!r}: want name=field:value+field:value with distinct "
                                 f"fields, got {part!r}")
            fields[field] = _field_value(sparsity, field, text, item)
        out[name] = fields
    for name, fields in out.items():
        merged = {**sparsity.to_dict(), **fields}
        if merged["sampler"] not in OMNI_SAMPLERS:
            raise ValueError(f"--omni_variants {name!r}: unknown omni sampler {merged['sampler']!r} "
                             f"(one of {OMNI_SAMPLERS})")
        try:
            distill.check(merged["distill_mode"], float(merged["distill_weight"]), merged["distill_norm"])
        except ValueError as e:
            raise ValueError(f"--omni_variants {name!r}: {e}") from None
    return out


def with_omni_variant(config: ml_collections.ConfigDict, fields: Mapping[str, Any]
                      ) -> ml_collections.ConfigDict:
    """A copy of ``config`` with the variant's ``sparsity`` fields set (``{}``: an unchanged copy)."""
    c = copy.deepcopy(config)
    with c.unlocked():
        c.sparsity.update(dict(fields))
    return c


def run_name(mode: str, steps: int, tier: str | None = None, variant: str = BASE_VARIANT) -> str:
    """``omni_s{steps}`` (base variant), ``omni_<variant>_s{steps}`` or ``pruned_<tier>_s{steps}``."""
    if mode != "omni":
        return f"pruned_{tier}_s{steps}"
    return f"omni_s{steps}" if variant == BASE_VARIANT else f"omni_{variant}_s{steps}"


# -- training and evaluation --------------------------------------------------------------------------------
def config_digest(config: ml_collections.ConfigDict) -> str:
    """The digest ``results.json`` keys a run's config with: 16 hex digits of the sha256 of its JSON, without
    the ``variants`` record (how the config was made, not what it trains: the fields the variants set are
    in the JSON themselves, and runs cached before the record existed keep their digest) and without a field
    added later at the value that reproduces older runs (``workdir.ADDED_FIELDS``: their digests stay; not
    those digests held before the field was registered, ``workdir.HASHED_ADDED_FIELDS``)."""
    record = copy.deepcopy(config)
    with record.unlocked():
        if "variants" in record:
            del record["variants"]
        for dotted, neutral in workdir_lib.unhashed_added_fields().items():  # as before the field existed
            section, field = dotted.split(".")
            if json.loads(json.dumps(record[section].get(field))) == neutral:
                del record[section][field]
    return hashlib.sha256(record.to_json_best_effort(indent=1, sort_keys=True).encode()).hexdigest()[:16]


def train_run(results: Results, out: str, name: str, config: ml_collections.ConfigDict,
              previous: str | None) -> dict[str, Any]:
    """Trains ``name`` (cached in ``results``); returns {steps, cpu_s, wall_s, trained_s, loadavg, ...}.

    ``previous``: a finished run whose checkpoint this one continues (copied before the first step); its
    cost is added. Raises ValueError when the cached record, or ``train/<name>``'s checkpoint
    (``omni_tf.training.workdir.claim``), is of another config.
    """
    digest = config_digest(config)
    done = results.get("runs", name)
    if done is not None:
        if done["config_sha256"] != digest:
            raise ValueError(f"{name} in {results.path} was trained with another config: use another --out")
        return done
    workdir = os.path.join(out, "train", name)
    if previous is not None and not os.path.exists(workdir):
        with fileio.build_dir(workdir) as tmp:  # whole or not at all
            shutil.copytree(os.path.join(out, "train", previous), tmp, dirs_exist_ok=True)
    lock = workdir_lib.claim(workdir, config)  # one writer; a checkpoint of another config is refused
    cpu0, wall0 = time.process_time(), time.monotonic()
    try:
        m = loop.train(config, workdir)
    finally:
        if lock is not None:
            lock.release()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    before = results.get("runs", previous) if previous else None
    record = {"steps": int(m["step"]), "cpu_s": cpu + (before["cpu_s"] if before else 0.0),
              "wall_s": wall + (before["wall_s"] if before else 0.0), "trained_s": float(m["trained_s"]),
              "loadavg": list(os.getloadavg()), "continued_from": previous, "stopped_by": m["stopped_by"],
              "loss": float(m["loss"]), "mode": config.training.mode, "config_sha256": digest,
              "cpu_s_per_step": cpu / max(1, int(m["step"]) - (before["steps"] if before else 0))}
    return results.put("runs", name, record)


def evaluate_run(results: Results, out: str, name: str, config: ml_collections.ConfigDict,
                 tier_levels: Mapping[str, float], data: tuple[list, Any]) -> dict[str, dict[str, Any]]:
    """Greedy test hypotheses and WER of ``name``'s checkpoint at each ``{tier: sparsity}`` (cached)."""
    return decode_levels(results, os.path.join(out, "train", name), name, config, tier_levels, data)


def compute_steps(omni: Mapping[str, Any], pruned_same_steps: Mapping[str, Any], steps: int, num_tiers: int,
                  unit: str) -> int:
    """Protocol compute: a pruned model's steps for ``1 / num_tiers`` of the omni run's compute (>= 1)."""
    if unit == "steps":
        return max(1, steps // num_tiers)
    return max(1, round(omni["cpu_s"] / num_tiers / pruned_same_steps["cpu_s_per_step"]))


# -- the comparison ------------------------------------------------------------------------------------------
def compare(config: ml_collections.ConfigDict, out: str, test_manifest: str, tiers: Mapping[str, float],
            budgets: Sequence[int], protocols: Sequence[str], compute_unit: str = "cpu",
            scale_schedule: bool = True, eval_utterances: int = 0, bootstrap: int = 1000,
            variants: Mapping[str, Mapping[str, Any]] | None = None, keep: Sequence[str] = ()
            ) -> list[dict[str, Any]]:
    """Trains and evaluates both sides at every budget and protocol; returns one row per (budget, protocol,
    omni variant, tier) with both WERs, the difference omni - pruned with its 95 % interval and each side's
    cost.

    ``variants``: ``{name: {sparsity field: value}}`` (``parse_omni_variants``; default ``{"base": {}}``),
    applied to the omni runs only. ``keep``: the command line's ``--config.*`` fields (``run_config``). A
    budget's runs all finish (every variant, every protocol) before the next budget starts. Raises
    ValueError for unknown protocols or budgets that are not ascending and positive, and (before any
    training) for an omni variant's config ``run_config`` refuses.
    """
    variants = {BASE_VARIANT: {}} if variants is None else variants
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad or not budgets or list(budgets) != sorted(set(budgets)) or budgets[0] < 1:
        raise ValueError(f"protocols must be in {PROTOCOLS} and budgets ascending positive, got "
                         f"{list(protocols)}, {list(budgets)}")
    for fields in variants.values():  # a refused omni config fails now, not after hours of other runs
        run_config(with_omni_variant(config, fields), "omni", budgets[0], tiers, None, scale_schedule, keep)
    results = Results(os.path.join(out, "results.json"))
    resume = horizon_free(config, scale_schedule)
    data = test_batches(config, test_manifest, eval_utterances)
    rows, trained = [], {}  # (mode, tier, variant) -> {steps: run name} of this invocation's finished runs

    def run(mode: str, steps: int, tier: str | None = None, variant: str = BASE_VARIANT
            ) -> dict[str, Any]:
        name = run_name(mode, steps, tier, variant)
        base = with_omni_variant(config, variants[variant]) if mode == "omni" else config
        c = run_config(base, mode, steps, tiers, None if tier is None else tiers[tier], scale_schedule, keep)
        key = (mode, tier, variant)
        shorter = [s for s in trained.get(key, {}) if s < steps]
        prev = trained[key][max(shorter)] if resume and shorter else None
        record = train_run(results, out, name, c, prev)
        trained.setdefault(key, {})[steps] = name
        levels = dict(tiers) if tier is None else {tier: tiers[tier]}
        return {**record, "name": name, "evals": evaluate_run(results, out, name, c, levels, data)}

    for steps in budgets:
        omnis = {v: run("omni", steps, variant=v) for v in variants}
        same = {t: run("pruned", steps, t) for t in tiers}
        for protocol, (variant, omni) in ((p, vo) for p in protocols for vo in omnis.items()):
            if protocol == "steps":
                pruned = same
            else:
                split = {t: compute_steps(omni, same[t], steps, len(tiers), compute_unit) for t in tiers}
                pruned = {t: run("pruned", split[t], t) for t in tiers}
            pruned_cpu = sum(p["cpu_s"] for p in pruned.values())
            pruned_wall = sum(p["wall_s"] for p in pruned.values())
            for tier in tiers:
                a, b = omni["evals"][tier], pruned[tier]["evals"][tier]
                if a["ids"] != b["ids"]:
                    raise ValueError(f"{tier}: omni and pruned evaluated different utterances")
                diff, lo, hi = metrics.bootstrap_wer_diff(a["refs"], a["hyps"], b["hyps"], n=bootstrap,
                                                          seed=0)
                rows.append({"budget": steps, "protocol": protocol, "omni": variant, "omni_run": omni["name"],
                             "tier": tier, "sparsity": tiers[tier],
                             "omni_steps": omni["steps"], "pruned_steps": pruned[tier]["steps"],
                             "omni_wer": a["wer"], "pruned_wer": b["wer"], "diff": diff, "diff_lo": lo,
                             "diff_hi": hi, "utterances": a["utterances"],
                             "omni_cpu_min": omni["cpu_s"] / 60, "pruned_cpu_min": pruned_cpu / 60,
                             "omni_wall_min": omni["wall_s"] / 60, "pruned_wall_min": pruned_wall / 60,
                             "loadavg": omni["loadavg"]})
    return rows


# -- report -------------------------------------------------------------------------------------------------
TABLE_COLUMNS = ("budget", "protocol", "omni", "tier", "sparsity", "omni_steps", "pruned_steps", "omni_wer",
                 "pruned_wer", "diff [95% CI]", "verdict", "omni_cpu_min", "pruned_cpu_min", "omni_wall_min",
                 "pruned_wall_min")


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The comparison table: WERs in %, the difference in WER points with its interval, cost in minutes."""
    def cell(r: Mapping[str, Any], c: str) -> str:
        if c == "diff [95% CI]":
            return f"{100 * r['diff']:+.1f} [{100 * r['diff_lo']:+.1f}, {100 * r['diff_hi']:+.1f}]"
        if c == "verdict":
            return verdict(r["diff_lo"], r["diff_hi"])
        v = r[c]
        if c.endswith("_wer"):
            return f"{100 * v:.1f} %"
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(cell(r, c) for c in TABLE_COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Mapping[str, Any]], path: str) -> None:
    """WER vs steps per model (protocol steps) and vs each side's CPU-minutes: per tier (colour), one curve
    per omni variant (line style) and one for the pruned models (dashed, squares)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (ax_steps, ax_cpu) = plt.subplots(1, 2, figsize=(11, 4.2))
    tiers = list(dict.fromkeys(r["tier"] for r in rows))
    colors = {t: f"C{i}" for i, t in enumerate(tiers)}
    variants = list(dict.fromkeys(r["omni"] for r in rows))
    styles = {v: ("-", "-.", ":")[i % 3] for i, v in enumerate(variants)}
    markers = {v: "o^vD<>px*h"[i % 10] for i, v in enumerate(variants)}
    for tier in tiers:
        mine = [r for r in rows if r["tier"] == tier]
        for v in variants:
            omni = {r["budget"]: r for r in mine if r["omni"] == v}.values()
            ax_steps.plot([r["omni_steps"] for r in omni], [100 * r["omni_wer"] for r in omni],
                          linestyle=styles[v], marker=markers[v], color=colors[tier],
                          label=f"{tier} omni {v}")
            ax_cpu.plot([r["omni_cpu_min"] for r in omni], [100 * r["omni_wer"] for r in omni],
                        linestyle=styles[v], marker=markers[v], color=colors[tier])
        steps = {r["budget"]: r for r in mine if r["protocol"] == "steps"}.values()
        ax_steps.plot([r["pruned_steps"] for r in steps], [100 * r["pruned_wer"] for r in steps], "--s",
                      color=colors[tier], label=f"{tier} pruned")
        pruned = sorted({(r["pruned_steps"], r["pruned_cpu_min"]): r for r in mine}.values(),
                        key=lambda r: r["pruned_cpu_min"])
        ax_cpu.plot([r["pruned_cpu_min"] for r in pruned], [100 * r["pruned_wer"] for r in pruned], "--s",
                    color=colors[tier])
    ax_steps.set(xlabel="training steps per model", ylabel="test WER (%)", title="same steps per model")
    ax_cpu.set(xlabel="CPU-minutes of the side (omni: one run; pruned: all tiers' runs)",
               ylabel="test WER (%)", title="WER vs training compute")
    ax_steps.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(rows: Sequence[Mapping[str, Any]], out: str, preamble: str) -> str:
    """``<out>/RESULTS.md`` (preamble + table) and ``<out>/curves.png``; returns the table."""
    table = markdown(rows)
    fileio.write_text(os.path.join(out, "RESULTS.md"),
                      f"# Omni vs individually pruned\n\n{preamble}\n\n{table}\n![curves](curves.png)\n")
    plot(rows, os.path.join(out, "curves.png"))
    return table


# -- main ---------------------------------------------------------------------------------------------------
def with_data(config: ml_collections.ConfigDict, data_dir: str, **files: str) -> ml_collections.ConfigDict:
    """``config`` reading the train / dev manifests (and ``files``: ``spm_model``, ``cmvn`` names) of the
    prepared ``data_dir`` (``experiment.with_data_dir``)."""
    return experiment.with_data_dir(config, data_dir, train="train.tsv", dev="dev.tsv", **files)


def pretrained_inputs(config: ml_collections.ConfigDict, data_dir: str, bundle: str, out: str,
                      keep: Sequence[str] = ()) -> tuple[ml_collections.ConfigDict, str]:
    """``--pretrained``: (config, data dir) of runs that start from the shipped dense bundle ``bundle``.

    ``config`` (the user's, no data dir applied) reads ``data_dir``'s manifests and gets
    ``e2e.shipped_config`` (the bundle's model config, ``training.init_from``, the ``finetune`` schedule;
    ``keep``: the command line's ``--config.*`` fields, which it leaves as given).
    The weights need the labels and features they were trained with: when the SentencePiece model and CMVN
    that config reads are byte for byte the bundle's (e.g. ``runs/demo/data_shipped``), ``data_dir`` is
    kept; otherwise (e.g. ``runs/demo/data``, whose spm/cmvn were trained on the demo corpus) the manifests
    of ``data_dir`` and the bundle's ``spm.model`` / ``cmvn.json`` are copied to ``<out>/data_shipped``
    (``e2e.copy_shipped_data``, as ``run_demo --init=shipped``) and read from there, with a warning.

    Raises ValueError naming both files when ``--config.paths.spm_model`` / ``cmvn`` name files other than
    the bundle's, or when ``<out>/data_shipped`` was copied from another data dir or bundle (the runs cached
    under ``out`` were trained on that copy: use another ``--out``); FileNotFoundError naming a missing
    bundle folder or file.
    """
    c, path, _ = e2e.shipped_config(with_data(config, data_dir), bundle, keep)
    try:
        spm_model, cmvn = sources.spm_cmvn_paths(c)
    except FileNotFoundError as e:  # a data dir of manifests only: it needs the bundle's files anyway
        foreign = [str(e)]
    else:
        foreign = pretrained.foreign_data_files(path, spm_model, cmvn)
    if not foreign:
        return c, data_dir
    explicit = [f"--config.paths.{f}" for f in ("spm_model", "cmvn") if config.paths[f]]
    if explicit:
        raise ValueError(f"--pretrained={bundle}: {'; '.join(foreign)}; the shipped weights need the "
                         f"bundle's files: drop {', '.join(explicit)}")
    shipped_dir = os.path.join(out, e2e.SHIPPED_DATA)
    record = os.path.join(shipped_dir, e2e.SHIPPED_SOURCE)
    if os.path.exists(record):
        with open(record, encoding="utf-8") as f:
            old = json.load(f)
        if (old.get("data_dir"), old.get("bundle")) != (os.path.abspath(data_dir), os.path.abspath(path)):
            raise ValueError(f"{shipped_dir} holds the manifests of {old.get('data_dir')} with the files of "
                             f"{old.get('bundle')} ({record}), not of --data_dir={data_dir} with "
                             f"--pretrained={bundle}: the runs under {out} were trained on that copy; use "
                             "another --out")
    e2e.copy_shipped_data(data_dir, path, shipped_dir)
    logging.warning("--pretrained=%s: %s; reading %s instead: the manifests of %s with the bundle's "
                    "spm.model and cmvn.json", bundle, "; ".join(foreign), shipped_dir, data_dir)
    shipped = with_data(config, shipped_dir, spm_model="spm.model", cmvn="cmvn.json")
    return e2e.shipped_config(shipped, bundle, keep)[0], shipped_dir


def smoke_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config`` with a one-layer model (the ``--smoke`` mode; every other field as given)."""
    c = copy.deepcopy(config)
    with c.unlocked():
        c.model.update(SMOKE_MODEL)
    return c


def make_smoke_data(out: str) -> str:
    """A tiny espeak-ng corpus, prepared, with a 30-piece SentencePiece model; returns its data dir."""
    from omni_tf.data import prepare, synthetic  # noqa: PLC0415
    from omni_tf.text.tokenizer import train_from_manifest  # noqa: PLC0415

    corpus, data = os.path.join(out, "corpus"), os.path.join(out, "data")
    if not os.path.exists(os.path.join(data, "spm.model")):
        spec = synthetic.CorpusSpec(num_utterances=40, seed=3, dev_fraction=0.2, test_fraction=0.2)
        synthetic.make_corpus(corpus, spec, num_workers=2, overwrite=True, log=lambda s: None)
        prepare.run(corpus, data)
        train_from_manifest(os.path.join(data, "train.tsv"), os.path.join(data, "spm"),
                            SMOKE_MODEL["vocab_size"])
    return data


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.INFO)
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    variants = parse_omni_variants(FLAGS.omni_variants, FLAGS.config.sparsity)
    out = os.path.abspath(FLAGS.out)
    os.makedirs(out, exist_ok=True)
    data_dir = FLAGS.data_dir or (make_smoke_data(out) if FLAGS.smoke else None)
    if data_dir is None:
        raise app.UsageError("--data_dir is required (except with --smoke)")
    if FLAGS.pretrained and FLAGS.smoke:
        raise app.UsageError("--smoke replaces the model: it cannot start from --pretrained")
    given_data, keep = data_dir, e2e.config_overrides(FLAGS)
    if FLAGS.pretrained:
        config, data_dir = pretrained_inputs(FLAGS.config, data_dir, FLAGS.pretrained, out, keep)
    else:
        config = with_data(FLAGS.config, data_dir)
    budgets = [int(b) for b in FLAGS.step_budgets]
    if FLAGS.smoke:
        config, budgets = smoke_config(config), [1, 2]
    tiers = tier_sparsities(FLAGS.tiers)
    test_manifest = config.paths.test_manifest or os.path.join(data_dir, "test.tsv")
    rows = compare(config, out, test_manifest, tiers, budgets, FLAGS.protocols,
                   FLAGS.compute_unit, FLAGS.scale_schedule, FLAGS.eval_utterances, FLAGS.bootstrap, variants,
                   keep)
    described = "; ".join(f"`{v}` (sparsity " + (", ".join(f"{k}={val}" for k, val in fields.items())
                                                  or f"as given, sampler {config.sparsity.sampler}") + ")"
                          for v, fields in variants.items())
    data = data_dir if data_dir == given_data else (f"{data_dir} (the manifests of {given_data} with the "
                                                      "shipped model's spm.model and cmvn.json)")
    preamble = (f"Data `{data}`; preset `{config.preset}`; omni variants: {described}; tiers "
                f"{tiers}; budgets {budgets} steps; protocol compute in {FLAGS.compute_unit}; diff = omni - "
                f"pruned in WER points with a 95 % paired bootstrap interval ({FLAGS.bootstrap} resamples "
                f"of {rows[0]['utterances']} test utterances). Command: `{' '.join(sys.argv)}`")
    print(write_outputs(rows, out, preamble), flush=True)


if __name__ == "__main__":
    app.run(main)
