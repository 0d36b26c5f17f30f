"""One experiment config: ``get_config("tiny")`` -> ConfigDict(model, data, sparsity, training, paths).

Use with ``config_flags.DEFINE_config_file("config", "omni_tf/configs/experiment.py:tiny", lock_config=True)``
and override fields on the command line, e.g. ``--config.training.max_steps=100``.
``get_config("tiny,smoke")`` is the runlocal-style smoke variant (a few steps, small batches); an unknown
variant raises with the known ones;
``get_config("paper,librispeech")`` is the LibriSpeech 960 h schedule with the tier sandwich and in-place
distillation (``recipes/librispeech/run.py``);
``get_config("tiny,demo")`` is the ~20-minute 2-core synthetic demo (``recipes/synthetic/run_demo.py``;
measurements behind every value in docs/TUNING.md); ``get_config("tiny,demo,finetune")`` its schedule for a
run that starts from a trained dense model and ``tier_sandwich`` the supernet training of such a run
(``run_demo --init=shipped`` adds both itself, ``with_variant``). ``config.variants`` records the variants
applied, in application order.
"""
import copy
import os
from collections.abc import Iterable

import ml_collections

from omni_tf.configs import data, model, sparsity, training


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
    """``"<preset>[,<variant>...]"``: a model preset (``model.PRESETS``) and variants (``VARIANTS``,
    applied in that dict's order). Raises ValueError naming the known presets / variants."""
    parts = [p.strip() for p in (arg or "tiny").split(",") if p.strip()]
    preset, variants = parts[0], parts[1:]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown config variant(s) {unknown} in {arg!r}; known variants: "
                         f"{sorted(VARIANTS)}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.variants = tuple(v for v in VARIANTS if v in variants)  # a record, read by with_variant and reports
    c.model = model.get_preset(preset)
    c.data = data.get_config()
    c.sparsity = sparsity.get_config()
    c.training = training.get_config()
    c.paths = ml_collections.ConfigDict()
    c.paths.manifest_dir = ""  # holds train.tsv / dev.tsv / test.tsv, cmvn.json, spm.model
    c.paths.train_manifest = ""  # default <manifest_dir>/train.tsv; comma-separated for several
    c.paths.dev_manifest = ""  # default <manifest_dir>/dev.tsv (search fitness, int8 calibration)
    c.paths.test_manifest = ""  # default <manifest_dir>/test.tsv (WER tables, export parity)
    c.paths.spm_model = ""
    c.paths.cmvn = ""
    for name, apply in VARIANTS.items():  # fixed order: smoke last, whatever the order given
        if name in variants:
            apply(c)
    return c


def with_variant(config: ml_collections.ConfigDict, name: str, keep: Iterable[str] = ()
                 ) -> ml_collections.ConfigDict:
    """A copy of ``config`` with variant ``name`` applied as if it had been in its config string.

    The variant runs on the copy (so fractions of ``training.max_steps`` are of the copy's), then the
    variants after it in ``VARIANTS`` order that ``config`` already has (``smoke`` stays last). An explicit
    setting wins over the variant: ``config``'s value is kept for a field named in ``keep`` (dotted paths,
    e.g. ``sparsity.sampler``: the command line's ``--config.*`` overrides, ``end_to_end.config_overrides``)
    and for a field whose value in ``config`` differs from ``get_config("<preset>,<config.variants>")``'s (a
    caller's setting). ``config`` already with ``name`` (``config.variants``): an unchanged copy. Raises
    ValueError for an unknown variant or a ``keep`` path that is not a config field.
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown config variant {name!r}; known variants: {sorted(VARIANTS)}")
    keep = frozenset(keep)
    unknown = sorted(p for p in keep if _lookup(config, p) is _MISSING)
    if unknown:
        raise ValueError(f"with_variant: {unknown} are not fields of the config")
    applied = tuple(config.get("variants", ()))
    c = copy.deepcopy(config)
    if name in applied:
        return c
    base = get_config(",".join([str(config.preset), *applied]))
    order = list(VARIANTS)
    with c.unlocked():
        for v in order[order.index(name):]:
            if v == name or v in applied:
                VARIANTS[v](c)
        for path, value in _leaves(c):
            given = _lookup(config, path)
            if value != given and (path in keep or given != _lookup(base, path)):
                _assign(c, path, given)
        c.variants = tuple(v for v in order if v == name or v in applied)
    return c


_MISSING = object()


def _leaves(c: ml_collections.ConfigDict, prefix: str = "") -> list[tuple[str, object]]:
    """``[(dotted path, value)]`` of every leaf of ``c``."""
    out = []
    for key, value in c.items():
        path = f"{prefix}{key}"
        out += _leaves(value, path + ".") if isinstance(value, ml_collections.ConfigDict) else [(path, value)]
    return out


def _lookup(c: ml_collections.ConfigDict, path: str) -> object:
    for key in path.split("."):
        if not isinstance(c, ml_collections.ConfigDict) or key not in c:
            return _MISSING
        c = c[key]
    return c


def _assign(c: ml_collections.ConfigDict, path: str, value: object) -> None:
    *parents, key = path.split(".")
    for p in parents:
        c = c[p]
    c[key] = value


def with_data_dir(config: ml_collections.ConfigDict, data_dir: str, train: str = "", dev: str = "",
                  test: str = "", spm_model: str = "", cmvn: str = "", source: str = "--data_dir"
                  ) -> ml_collections.ConfigDict:
    """A copy of ``config`` reading manifests, CMVN and SentencePiece model from a prepared ``data_dir``.

    The one place a recipe's ``--data_dir`` enters the config; an empty ``data_dir`` keeps the config's
    paths. Otherwise ``paths.manifest_dir`` = ``data_dir``, and each of ``paths.train_manifest`` /
    ``dev_manifest`` / ``test_manifest`` / ``spm_model`` / ``cmvn`` is
      - the caller's file name(s) in ``data_dir`` when the matching argument names one (comma-separated for
        several manifests: e.g. ``recipes/librispeech/export.py --split``);
      - else the config's value when set (``--config.paths.<field>``: an explicit path wins);
      - else "" = ``<data_dir>/<split>.tsv``, ``spm.model``, ``cmvn.json`` (resolved by
        ``omni_tf.training.sources``).
    A set ``paths.manifest_dir`` other than ``data_dir``, or a set field other than the file the caller
    names, raises ValueError naming both the field and ``source`` (where ``data_dir`` comes from, e.g.
    ``--data_dir``): no flag is silently overridden. A set field equal (``os.path.normpath``) to that path
    is fine.
    """
    c = copy.deepcopy(config)
    if not data_dir:
        return c
    named = {"manifest_dir": data_dir}
    for field, names in (("train_manifest", train), ("dev_manifest", dev), ("test_manifest", test),
                         ("spm_model", spm_model), ("cmvn", cmvn)):
        if names:
            named[field] = ",".join(os.path.join(data_dir, n) for n in names.split(","))
    conflicts = [f"--config.paths.{field}={config.paths[field]!r} (the data dir gives {path!r})"
                 for field, path in named.items()
                 if config.paths[field] and not _same_paths(config.paths[field], path)]
    if conflicts:
        raise ValueError(f"{source} {data_dir!r} conflicts with " + "; ".join(conflicts)
                         + f": drop those, or (where the recipe allows it) give --config.paths.* instead of "
                         f"{source}")
    with c.unlocked():
        c.paths.update(named)
    return c


def _same_paths(a: str, b: str) -> bool:
    """Whether two comma-separated path lists name the same files (after ``os.path.normpath``)."""
    return [os.path.normpath(x) for x in a.split(",")] == [os.path.normpath(x) for x in b.split(",")]


def _smoke(c: ml_collections.ConfigDict) -> None:
    """A few steps with small batches (tests, a first try on a new machine)."""
    c.training.max_steps = 6
    c.training.warmup_steps = 2
    c.training.checkpoint_every = 3
    c.training.summary_every = 1
    c.training.log_every = 1
    c.sparsity.begin_step = 1
    c.sparsity.end_step = 4
    c.sparsity.frequency = 1
    c.data.batch_size = 4
    c.data.max_frames_per_batch = 4000


def _librispeech_960h(c: ml_collections.ConfigDict) -> None:
    """In the spirit of the paper: ~120 epochs of 960 h (281k utterances, ~2.3k batches of ~120 utterances
    per epoch), SpecAugment + speed perturbation, sparsity ramped over the middle third after a dense
    warm-up, and the supernet training that won on the synthetic demo (``_tier_sandwich``: dense + every
    tier each step, the tiers distilled from the dense subnet; docs/RESULTS.md 1c and 2f)."""
    c.data.max_frames_per_batch = 120000
    c.data.batch_size = 256
    c.data.specaugment = True
    c.data.time_masks = 10
    c.data.speed_perturb = True
    c.training.max_steps = 280000
    c.training.warmup_steps = 10000
    c.training.learning_rate = 1e-3
    c.training.checkpoint_every = 2000
    c.training.summary_every = 200
    c.training.log_every = 200
    c.sparsity.levels = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
    c.sparsity.begin_step = 60000
    c.sparsity.end_step = 180000
    c.sparsity.frequency = 1000
    c.sparsity.search_population = 32
    c.sparsity.search_generations = 20
    _tier_sandwich(c)


def _synthetic_demo(c: ml_collections.ConfigDict) -> None:
    """The README demo: 2500 steps (14.4 min at 2.9 steps/s on 2 shared cores) on 8000 espeak-ng utterances.

    The model is far from converged in that budget (train WER ~ test WER), so everything favours learning
    speed: no SpecAugment and no dropout, 8x subsampling (80 ms encoder frames: ~1.7x more steps per
    minute; chunk 160 ms / lookahead 40 ms unchanged), a 30-piece vocabulary (SentencePiece unigram at 30
    pieces = exactly the 28 characters of the sentence source + <blk> + <unk>; test WER after 1500 omni
    steps 55% vs 60% for 64 pieces; at 500 dense steps 64 / 128 / 256 / 500 pieces gave 76 / 81 / 87 / 89%),
    peak LR 3e-3 after 100 warm-up steps, cosine to max_steps. Omni: uniform sampling (one subnet per
    step, the dense step cost; ``run_demo --init=shipped``, the default, adds ``tier_sandwich`` instead),
    sparsity ramped over 40-80% of the steps; 1x4 blocks (the tuning runs used
    1x1, so levels >= 0.7 may be worse than docs/TUNING.md shows). docs/TUNING.md has every run.
    """
    c.model.subsampling_factor = 8
    c.model.vocab_size = 30  # char level: run_demo trains a unigram SentencePiece of this size
    c.model.dropout = 0.0
    c.data.specaugment = False
    c.training.max_steps = 2500  # cosine horizon, or --max_minutes when it binds first (1.3-4.8 steps/s seen)
    c.training.warmup_steps = 100
    c.training.learning_rate = 3e-3
    c.training.checkpoint_every = 250
    c.training.log_every = 50
    c.training.summary_every = 50
    c.sparsity.block = "1x4"  # TFLite's sparse float FULLY_CONNECTED blocks (float16/float32 tiers)
    c.sparsity.sampler = "uniform"
    c.sparsity.begin_step = 1000
    c.sparsity.end_step = 2000
    c.sparsity.frequency = 80


def _finetune(c: ml_collections.ConfigDict) -> None:
    """The schedule of a run that starts from a trained dense model (``training.init_from``; ``run_demo
    --init=shipped`` and ``omni_vs_pruned --pretrained`` add this variant through
    ``recipes.end_to_end.shipped_config``).

    Gradual pruning of a trained network, then training on at the final masks (Zhu & Gupta 2017, "To prune
    or not to prune", the paper's [1], Sec. 3: the masks reach their targets over a ramp of ranking steps
    while training continues, and the pruned network recovers in the steps after it). So: no dense warm-up
    (``sparsity.dense_warmup=False``; the warm-up exists because a model from scratch must first learn),
    the sparsity ramp from 2 % to 50 % of ``training.max_steps`` with 15 re-rankings (the demo: 80 steps
    apart at 2500 steps, as its own ramp), so the second half fine-tunes the frozen masks, and a peak
    learning rate of 2e-3 (the demo's scratch rate is 3e-3) after 50 warm-up steps: the sparse tiers need a
    large rate to recover from pruning (docs/RESULTS.md 1e, 500 steps of the tier sandwich from the shipped
    model: every tier 2-8 WER points better at 2e-3 than at 1e-3 and 6-18 points worse at 3e-4, the dense
    level a tie each time). Step counts are
    fractions of ``training.max_steps`` when the variant is applied (after ``librispeech`` / ``demo``,
    before ``smoke``); the ramp and the rate run on the progress clock (``omni_tf/training/progress.py``), so
    they keep these fractions when ``--max_minutes`` binds first.
    """
    steps = int(c.training.max_steps)
    c.training.learning_rate = 2e-3
    c.training.warmup_steps = 50
    c.sparsity.dense_warmup = False
    c.sparsity.begin_step = max(1, round(FINETUNE_RAMP[0] * steps))
    c.sparsity.end_step = max(c.sparsity.begin_step + 1, round(FINETUNE_RAMP[1] * steps))
    c.sparsity.frequency = max(1, round((c.sparsity.end_step - c.sparsity.begin_step) / FINETUNE_RANKINGS))


def _tier_sandwich(c: ml_collections.ConfigDict) -> None:
    """Train the deployed tiers every step and let them learn from the dense subnet (``run_demo
    --init=shipped`` adds this variant; ``omni_tf/sparsity/sampling.py``, ``omni_tf/training/distill.py``).

    The sandwich rule of slimmable networks (Yu & Huang 2019, "Universally slimmable networks", Sec. 3.2:
    the largest and the smallest subnet every step bound the quality of the ones between) taken over the
    deployed tiers only (``sparsity.sampler=tiers``: dense + every ``sparsity.train_levels`` subnet each
    step, so each tier gets as many updates as its individually pruned model), with in-place distillation
    (US-Nets Sec. 3.3, BigNAS Sec. 3.1: the dense subnet learns from the labels, the sparse subnets from a
    mix of the labels and its soft outputs, ``distill_mode=mix`` at weight 0.5). Measured against the
    demo's one-uniform-level-per-step sampling from the shipped model: at the same 10-minute budget the dense
    level and every tier are as good or better (better at the 0.9 tier, ties elsewhere; the levels that are
    not tiers get worse; docs/RESULTS.md 1c); at the same steps per model the tiers sampler without
    distillation is 5-16 WER points better per tier (2e). A sampler kept from the command line keeps the
    distillation too: with ``--config.sparsity.sampler=uniform`` alone the loop trains the dense teacher
    beside the sampled level each step (``omni_tf.training.loop.sample_levels``); add
    ``--config.sparsity.distill_weight=0`` for one level per step.
    """
    c.sparsity.sampler = "tiers"
    c.sparsity.distill_weight = 0.5
    c.sparsity.distill_mode = "mix"


FINETUNE_RAMP = (0.02, 0.5)  # finetune: the sparsity ramp's begin and end, fractions of training.max_steps
FINETUNE_RANKINGS = 15  # finetune: re-rankings over the ramp
# Applied in this order whatever the order given: a schedule variant before finetune (which reads its
# max_steps), smoke last.
VARIANTS = {"librispeech": _librispeech_960h, "demo": _synthetic_demo, "finetune": _finetune,
            "tier_sandwich": _tier_sandwich, "smoke": _smoke}
