"""A/B of one config change: retrain a finished run with some config fields changed, then compare the two.

Usage (from the repository root):
  python -m benchmarks.retrain --from=runs/demo_scratch --out=runs/ab/ctc02 \\
      --config.training.ctc_weight=0.2 [--compare] [--levels=0,0.6] [--split=test] [--max_utterances=0]
  python -m benchmarks.retrain --from=runs/demo_scratch --out=runs/ab/lr3e-4 \\
      --config.training.learning_rate=3e-4 --config.sparsity.train_levels=0.6,0.9 --compare

``--from`` is a ``run_demo`` / ``run_recipe`` output dir (supernet at ``<dir>/train/omni``) or a training
workdir (``config.json`` + ``ckpt/``), resolved and loaded as ``benchmarks.compare_runs`` resolves ``--a`` /
``--b`` (``compare_runs.load_run``: the recorded ``config.json``, JSON lists back to tuples). Each
``--config.<section>.<field>=<value>`` sets one field, parsed to the type of the source's value (bool, int,
float, str; a tuple as ``a,b`` or ``(a, b)``, its items of the source tuple's item type). Refused with
ValueError: a field the config does not have (naming the known fields of its section), a value that does
not parse (naming field, value and type), a value equal to the source's (not an A/B), a ``paths.*`` field
(the data must be the source's), or only fields that do not change what training computes
(``omni_tf.training.workdir.RESULT_NEUTRAL``); no override at all is a UsageError.

Kept equal between A (the retrain) and B (the source): every other config field, so the training data (the
source's train manifest, ``spm.model`` and ``cmvn.json``, by the paths in its config), the model, seeds,
schedule, ``training.init_from`` (the loop checks the bundle's files again) and the budget
(``training.max_steps`` / ``training.max_minutes``) unless overridden. Not equal: the machine's load. With a
wall-clock budget (``max_minutes``) a run under another load trains another number of steps (the schedules
follow the progress clock, so both end decayed, but one saw fewer updates): ``retrain.json`` records both
runs' steps and the load averages, and the comparison table names both checkpoints' steps.

Training goes to ``<out>`` itself (a training workdir: ``config.json``, ``ckpt/``, ``train_metrics.json``,
``tb/``), with ``omni_tf.training.loop.train`` under the workdir lock (``recipes.end_to_end.train``).
Rerunning the command resumes it (a finished run trains no further; another override for the same
``--out`` is refused by the workdir's config check). ``<out>`` may not be or contain the source's workdir,
nor lie inside it. ``<out>/retrain.json``: the source (path given, workdir, checkpoint step, its
``train_metrics.json`` summary), the overrides (source and new values), the command, the steps of both
runs, and per invocation the wall and process CPU seconds, ``os.getloadavg()`` at start and end and the
loop's metrics (step, stopped_by, ...).

``--compare``: then ``compare_runs.compare_and_report`` with A = the retrain, B = the source (same test
utterances, each with its own tokenizer and CMVN, which are the same files here), printing the table and
writing ``<out>/compare/`` (``compare.md``, ``compare.json``, ``decodes.json``); ``--levels``, ``--split``,
``--max_utterances``, ``--bootstrap``, ``--bootstrap_seed`` mean what they mean in ``compare_runs`` and need
``--compare``.
"""
from __future__ import annotations

import ast
import copy
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
from absl import app, flags, logging

import omni_tf  # noqa: F401
from benchmarks import compare_runs
from omni_tf import fileio
from omni_tf.training import sources
from omni_tf.training import workdir as workdir_lib
from recipes import end_to_end as e2e

FLAGS = flags.FLAGS
OVERRIDE_PREFIX = "--config."
RECORD_FILE = "retrain.json"
DATA_SECTION = "paths"
COMPARE_FLAGS = ("levels", "split", "max_utterances", "bootstrap", "bootstrap_seed")
_SCALARS = {bool: flags.BooleanParser(), int: flags.IntegerParser(), float: flags.FloatParser()}


def override_args(args: Sequence[str]) -> dict[str, str]:
    """``{dotted field: raw value}`` of the ``--config.<field>=<value>`` items of ``args`` (others ignored).

    Raises app.UsageError: none given, one without ``=<value>``, or a field given twice."""
    out: dict[str, str] = {}
    for arg in args:
        if not arg.startswith(OVERRIDE_PREFIX):
            continue
        field, eq, raw = arg[len(OVERRIDE_PREFIX):].partition("=")
        if not eq or not field:
            raise app.UsageError(f"{arg}: give an override as --config.<section>.<field>=<value>")
        if field in out:
            raise app.UsageError(f"--config.{field} given twice")
        out[field] = raw
    if not out:
        raise app.UsageError("give at least one --config.<section>.<field>=<value>: a retrain with the "
                             "source's config is not an A/B")
    return out


def _items(field: str, raw: str) -> list[str]:
    text = raw.strip()
    if text[:1] in "([" and text[-1:] in ")]":
        text = text[1:-1]
    if not text.strip():
        return []
    items = [i.strip() for i in text.split(",")]
    if items[-1] == "":  # "(0.5,)"
        items.pop()
    if "" in items:
        raise ValueError(f"--config.{field}={raw!r}: an empty tuple item")
    return [i[1:-1] if len(i) >= 2 and i[0] == i[-1] and i[0] in "'\"" else i for i in items]


def _literal(item: str) -> Any:
    try:
        return ast.literal_eval(item)
    except (ValueError, SyntaxError):
        return item


def _type_name(value: Any) -> str:
    if isinstance(value, tuple):
        return f"tuple of {' / '.join(sorted({type(v).__name__ for v in value})) or 'anything'}"
    return type(value).__name__


def _scalar(kind: type, raw: str) -> Any:
    return raw if kind is str else _SCALARS[kind].parse(raw)


def parse_value(field: str, raw: str, current: Any) -> Any:
    """``raw`` (command-line text) as a value of the type of ``current``, the source's value of ``field``.

    bool / int / float by absl's parsers (``true``/``false``/``1``/``0``; ``3e-4``), str as is, a tuple from
    ``a,b`` or ``(a, b)`` with items of ``current``'s item type (items parsed as Python literals when
    ``current`` is empty or mixed). Raises ValueError naming the field, the value and the expected type."""
    kind = type(current)
    if kind not in (str, tuple, *_SCALARS):
        raise ValueError(f"--config.{field}: a field of type {kind.__name__} ({current!r}) cannot be set "
                         "from the command line")
    try:
        if kind is not tuple:
            return _scalar(kind, raw)
        kinds = {type(v) for v in current}
        item = kinds.pop() if len(kinds) == 1 else None
        items = _items(field, raw)
        return tuple(_scalar(item, i) if item in (str, *_SCALARS) else _literal(i) for i in items)
    except ValueError as e:
        raise ValueError(f"--config.{field}={raw!r}: not a {_type_name(current)} (the type of the source's "
                         f"value {current!r}): {e}") from None


def _parent(config: ml_collections.ConfigDict, field: str) -> tuple[ml_collections.ConfigDict, str]:
    """(the section holding ``field``, its last name). ValueError naming an unknown field and the known
    fields of its section, or a section given instead of a field."""
    *sections, name = field.split(".")
    node = config
    for i, key in enumerate([*sections, name]):
        where = ".".join(field.split(".")[:i]) or "the config"
        if not isinstance(node, ml_collections.ConfigDict):
            raise ValueError(f"--config.{field}: {where} is a field, not a section")
        if key not in node:
            raise ValueError(f"--config.{field}: unknown field {key!r} of {where}; its fields: "
                             f"{', '.join(sorted(node.keys()))}")
        parent, node = node, node[key]
    if isinstance(node, ml_collections.ConfigDict):
        raise ValueError(f"--config.{field} is a section: set one of its fields ({', '.join(sorted(node))})")
    return parent, name


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, str]
                    ) -> tuple[ml_collections.ConfigDict, dict[str, dict[str, Any]]]:
    """(a copy of ``config`` with each ``{dotted field: raw value}`` parsed and set, ``{field: {"source":
    old, "retrain": new}}``).

    Raises ValueError: an unknown field or unparsable value (``parse_value``), a value equal to the
    source's, a ``paths.*`` field, or only fields that do not change the trained result."""
    new = copy.deepcopy(config)
    changes: dict[str, dict[str, Any]] = {}
    for field, raw in overrides.items():
        parent, name = _parent(new, field)
        if field.split(".")[0] == DATA_SECTION:
            raise ValueError(f"--config.{field}: the retrain trains on the source's data (its config's "
                             f"{DATA_SECTION}) so that A and B compare; train on other data with the "
                             "recipes and compare with compare_runs --allow_different_data")
        old = parent[name]
        value = parse_value(field, raw, old)
        if value == old:
            raise ValueError(f"--config.{field}={raw!r} equals the source's value {old!r}: not an A/B")
        with new.unlocked():
            parent[name] = value
        changes[field] = {"source": old, "retrain": value}
    # either side: a field at its ADDED_FIELDS value is left out of result_fields, yet turning it off changes
    result = {**workdir_lib.result_fields(config, budget=True), **workdir_lib.result_fields(new, budget=True)}
    if not any(f in result for f in changes):
        raise ValueError(f"--config.{', --config.'.join(changes)}: changes nothing training computes "
                         "(logging, checkpoint cadence, search or record fields): the retrain would repeat "
                         "the source")
    return new, changes


def check_out(source: compare_runs.Run, out: str) -> str:
    """``out`` as an absolute workdir; ValueError when it is, holds or lies inside the source's workdir
    (training there would change run B), or when its ``retrain.json`` names another source."""
    workdir, src = os.path.realpath(out), os.path.realpath(source.workdir)
    if os.path.commonpath([workdir, src]) in (workdir, src):
        raise ValueError(f"--out={out} is, holds or lies inside the source's workdir {source.workdir}: "
                         "the retrain would write into run B")
    record = _read_record(os.path.abspath(out))
    if record and record["source"]["workdir"] != source.workdir:
        raise ValueError(f"{out}/{RECORD_FILE} is a retrain of {record['source']['workdir']}, not of "
                         f"{source.workdir}: use another --out")
    return os.path.abspath(out)


def _read_record(workdir: str) -> dict[str, Any] | None:
    path = os.path.join(workdir, RECORD_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def source_summary(source: compare_runs.Run) -> dict[str, Any]:
    """The source's path given, workdir, checkpoint step and (when present) its last invocation's
    ``train_metrics.json`` step / stopped_by / trained_s."""
    out: dict[str, Any] = {"given": source.given, "workdir": source.workdir,
                           "step": compare_runs.checkpoint_step(source)}
    path = os.path.join(source.workdir, "train_metrics.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
        out["train_metrics"] = {k: m.get(k) for k in ("step", "stopped_by", "trained_s")}
    return out


def retrain(source: compare_runs.Run, config: ml_collections.ConfigDict, changes: Mapping[str, Any],
            out: str, command: str) -> dict[str, Any]:
    """Trains (or resumes) ``config`` in ``out`` (``check_out``) and writes ``<out>/retrain.json`` (module
    docstring); returns its contents. FileNotFoundError naming a missing data file of the source's config;
    fileio.DirLocked / workdir.ConfigChanged from the workdir claim."""
    workdir = check_out(source, out)
    sources.manifest_path(config, "train")  # the train manifest, spm.model and cmvn.json exist
    previous = _read_record(workdir)
    summary = source_summary(source)
    load_start, started = os.getloadavg(), time.time()
    wall, cpu = time.monotonic(), time.process_time()
    metrics = e2e.train(config, workdir)  # under the workdir lock and config check (workdir.claim)
    invocation = {"started_unix_s": started, "wall_s": time.monotonic() - wall,
                  "cpu_s": time.process_time() - cpu, "loadavg_start": list(load_start),
                  "loadavg_end": list(os.getloadavg()), "command": command, "metrics": metrics}
    record = {"source": summary, "workdir": workdir, "overrides": dict(changes), "command": command,
              "steps": {"retrain": metrics["step"], "source": summary["step"]},
              "invocations": [*(previous or {}).get("invocations", []), invocation]}
    fileio.write_json(os.path.join(workdir, RECORD_FILE), record)
    return record


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """The command line's flags (``--config.*`` are parsed by ``main`` against the source's config); defined
    when run as a script or by a test, not at import (``compare_runs.define_flags``'s reason)."""
    flags.DEFINE_string("from", None, "The source run: a run_demo / run_recipe output dir (train/omni) or a "
                        "training workdir (config.json + ckpt/).", flag_values=flag_values)
    flags.DEFINE_string("out", None, "The retrain's training workdir (and retrain.json, compare/).",
                        flag_values=flag_values)
    flags.DEFINE_bool("compare", False, "Then compare the retrain (A) with the source (B): compare_runs.",
                      flag_values=flag_values)
    compare_runs.define_compare_flags(flag_values)


def parse_argv(argv: Sequence[str], flag_values: flags.FlagValues = FLAGS) -> list[str]:
    """absl ``flags_parser``: parses ``argv``'s flags except the ``--config.*`` overrides (only the source's
    config can type them); returns the positional arguments, then the overrides, for ``main``. Raises
    flags.Error (an unknown flag...)."""
    overrides = [a for a in argv[1:] if a.startswith(OVERRIDE_PREFIX)]
    return [*flag_values([a for a in argv if not a.startswith(OVERRIDE_PREFIX)]), *overrides]


def run(argv: Sequence[str], flag_values: flags.FlagValues = FLAGS) -> dict[str, Any]:
    """``main`` on ``argv`` (``parse_argv``'s result) and parsed ``flag_values``: retrains (``retrain``), then
    with ``--compare`` prints ``compare_runs``' table; returns the record. app.UsageError for missing or
    stray arguments; ValueError as ``apply_overrides`` / ``retrain`` / ``compare_runs.compare``."""
    fv = flag_values
    stray = [a for a in argv[1:] if not a.startswith(OVERRIDE_PREFIX)]
    if stray:
        raise app.UsageError(f"unexpected arguments {stray}")
    if not fv["from"].value or not fv.out:
        raise app.UsageError("--from and --out are required")
    if not fv.compare and any(fv[f].present for f in COMPARE_FLAGS):
        given = [f"--{f}" for f in COMPARE_FLAGS if fv[f].present]
        raise app.UsageError(f"{', '.join(given)}: only with --compare")
    overrides = override_args(argv[1:])
    source = compare_runs.load_run("B", fv["from"].value)
    config, changes = apply_overrides(source.config, overrides)
    command = fileio.shell_join(["python", "-m", "benchmarks.retrain", *sys.argv[1:]])
    try:
        record = retrain(source, config, changes, fv.out, command)
    except (fileio.DirLocked, workdir_lib.ConfigChanged) as e:
        raise SystemExit(f"retrain: {e}") from e
    last = record["invocations"][-1]["metrics"]
    print(f"retrain {record['workdir']}: step {last['step']} (stopped by {last['stopped_by']}); source "
          f"{source.workdir}: step {record['steps']['source']}", flush=True)
    if fv.compare:
        a = compare_runs.load_run("A", fv.out)
        print(compare_runs.compare_and_report(a, source, os.path.join(record["workdir"], "compare"), command,
                                              **compare_runs.compare_flag_values(fv)), flush=True)
    return record


def main(argv: Sequence[str]) -> None:
    logging.set_verbosity(logging.INFO)
    run(argv)


def _flags_parser(argv: list[str]) -> list[str]:
    try:
        return parse_argv(argv)
    except flags.Error as e:
        sys.exit(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull to see help on flags.")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=_flags_parser)
