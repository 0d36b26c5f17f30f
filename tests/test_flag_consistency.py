"""A flag means one thing in every recipe and benchmark: every absl flag name defined in more than one program
under recipes/, benchmarks/, tflite_export/ and scripts/ has the same type and the same help text everywhere,
but for the explicit exceptions below. The sources are parsed with ``ast``, not imported: importing several
recipes into one process collides on their absl flag names."""
from __future__ import annotations

import ast
import dataclasses
import os
from collections import defaultdict

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("recipes", "benchmarks", "tflite_export", "scripts")
# recipes/tier_flags.py's helper: the flag's syntax and help come from that one module; the recipe adds a
# sentence of its own.
TIERS_HELPER = "define_tiers_flag"

# (file, flag) -> why that definition's help text may differ from the other definitions of the flag (which
# must still agree with each other). The meaning is the same; only recipe-specific detail differs.
HELP_EXCEPTIONS: dict[tuple[str, str], str] = {
    # recipes/synthetic/pretrain.py is another engineer's this session; its help texts say the same things.
    ("recipes/synthetic/pretrain.py", "config"): "adds that training.mode is forced to dense",
    ("recipes/synthetic/pretrain.py", "eval_utterances"): "test utterances of the bundle's WER",
    ("recipes/synthetic/pretrain.py", "max_minutes"): "its default (60) is a budget, not 'none'",
    ("recipes/synthetic/pretrain.py", "num_utterances"): "the pretraining corpus's size",
    ("recipes/synthetic/pretrain.py", "out"): "says what its work directory holds",
    ("recipes/synthetic/pretrain.py", "overwrite"): "it replaces a bundle folder this --out did not write",
    ("recipes/synthetic/pretrain.py", "pretrained"): "the bundle it continues (run_demo's: --init=shipped's)",
    # The same prepared directory; these say when it is read at all.
    ("benchmarks/compare_runs.py", "data_dir"): "read only for a bundle side (refused otherwise)",
    ("benchmarks/train_step.py", "data_dir"): "read only with --breakdown (else random features)",
    # Size budgets in every recipe; export also says how it resolves them (search or densest uniform).
    ("recipes/librispeech/export.py", "budgets"): "adds --budget_search / --nobudget_search",
    # A count of dev utterances in both; export takes them after its parity set, int8_export before.
    ("recipes/librispeech/export.py", "calib_utterances"): "which dev utterances (after the parity set)",
    ("recipes/librispeech/export.py", "dev_utterances"): "also times latency on them",
    # Step limit in both; the end-to-end recipe says how it combines with --config.training.max_steps.
    ("recipes/librispeech/run.py", "max_steps"): "overfit has no config to override",
    # Output directories: each help names its default and what a rerun reuses.
    ("recipes/librispeech/export.py", "out"): "the bundle's default place (<workdir>/tflite)",
    ("benchmarks/compare_runs.py", "out"): "its defaults (<a>/compare, runs/compare/<A>_vs_<B>/<split>)",
    ("benchmarks/omni_vs_pruned.py", "out"): "says which cached runs and evaluations are skipped",
    ("benchmarks/retrain.py", "out"): "it is the retrain's training workdir",
    ("recipes/librispeech/evaluate.py", "out_dir"): "its default (<workdir>/eval)",
    ("recipes/librispeech/search.py", "out_dir"): "its default (<workdir>/search)",
    ("recipes/librispeech/prepare.py", "out_dir"): "what goes there (manifests, reports, cmvn.json)",
    # The split read in every program; each names where its split names come from.
    ("recipes/librispeech/export.py", "split"): "what the split is used for (parity, calibration, search)",
    ("benchmarks/compare_runs.py", "split"): "a split of run A's config (test_ood: the demo's)",
    ("benchmarks/input_pipeline.py", "split"): "a split directory of --librispeech_dir",
    # A cap on the utterances decoded; compare_runs rounds it to whole batches.
    ("benchmarks/compare_runs.py", "max_utterances"): "whole batches of --split",
    ("benchmarks/input_pipeline.py", "librispeech_dir"): "empty: it generates a corpus instead",
    ("recipes/synthetic/make_corpus.py", "num_workers"): "espeak-ng processes; says the output is the same",
    # A file to write in every program; each says what goes in it.
    ("recipes/librispeech/transcribe.py", "output"): "Kaldi-style lines (default stdout)",
    ("benchmarks/plot_curves.py", "output"): "the PNG (required)",
    ("benchmarks/tflite_latency.py", "preset"): "used only without --export_dir",
    ("benchmarks/omni_vs_pruned.py", "pretrained"): "both sides start from it; which data it reads",
    ("recipes/librispeech/search.py", "quantization"): "it only picks the size metric of the budgets",
    # Corpus seeds; settled last session (not renamed here).
    ("recipes/synthetic/make_corpus.py", "seed"): "says that the same flags give the same files",
    ("recipes/synthetic/pretrain.py", "seed"): "the pretraining corpus's seed",
}
# (file, flag) -> why that definition's type may differ.
TYPE_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("benchmarks/compare_runs.py", "split"): "an enum: only the splits a run's config names (test, dev, "
                                             "test_ood); elsewhere any <split>.tsv or split directory",
}


@dataclasses.dataclass(frozen=True)
class FlagDef:
    path: str  # relative to the scanned root, "/"-separated
    line: int
    name: str
    type: str  # the DEFINE_* function (with an enum's values), or TIERS_HELPER
    help: str  # source text of the help argument (an f-string's unparsed source)


def _argument(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    if len(call.args) > position:
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def _text(node: ast.expr | None) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return "" if node is None else ast.unparse(node)


def flag_definitions(root: str = ROOT, dirs: tuple[str, ...] = SCANNED) -> list[FlagDef]:
    """Every ``*.DEFINE_<type>(name, default, help, ...)`` and ``define_tiers_flag(default, help, ...)`` call
    in the Python files under ``dirs``. ValueError (file and line) for a flag name that is not a literal."""
    found = []
    for top in dirs:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
            for filename in sorted(f for f in filenames if f.endswith(".py")):
                path = os.path.join(dirpath, filename)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), rel)
                for node in ast.walk(tree):
                    if isinstance(node, ast.Call):
                        flag = _definition(node, rel)
                        if flag is not None:
                            found.append(flag)
    return found


def _definition(call: ast.Call, rel: str) -> FlagDef | None:
    func = call.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if called == TIERS_HELPER:
        name = _argument(call, 3, "name")
        name_text = "tiers" if name is None else name.value if isinstance(name, ast.Constant) else None
        # The recipe's own sentence (argument 1) is per recipe by design; the syntax text is the helper's.
        kind, help_text = TIERS_HELPER, f"<{TIERS_HELPER}>"
    elif called.startswith("DEFINE_"):
        name = _argument(call, 0, "name")
        name_text = name.value if isinstance(name, ast.Constant) and isinstance(name.value, str) else None
        help_position = 3 if called == "DEFINE_enum" else 2
        kind = called if called != "DEFINE_enum" else f"{called}({_text(_argument(call, 2, 'enum_values'))})"
        help_text = _text(_argument(call, help_position, "help"))
    else:
        return None  # flags.DEFINE(parser, ...) itself: inside recipes/tier_flags.py's helper
    if name_text is None:
        raise ValueError(f"{rel}:{call.lineno}: {called} with a flag name that is not a literal: the flag "
                         "consistency test cannot check it")
    return FlagDef(rel, call.lineno, name_text, kind, help_text)


def mismatches(definitions: list[FlagDef], help_exceptions: dict[tuple[str, str], str],
               type_exceptions: dict[tuple[str, str], str]) -> list[str]:
    """One message per flag name defined more than once whose types, or help texts, differ among the
    definitions not excepted."""
    by_name: dict[str, list[FlagDef]] = defaultdict(list)
    for d in definitions:
        by_name[d.name].append(d)
    problems = []
    for name, defs in sorted(by_name.items()):
        for field, exceptions in (("type", type_exceptions), ("help", help_exceptions)):
            kept = [d for d in defs if (d.path, name) not in exceptions]
            if len({getattr(d, field) for d in kept}) > 1:
                listing = "; ".join(f"{d.path}:{d.line} {getattr(d, field)!r}" for d in kept)
                problems.append(f"--{name}: different {field} in {listing}")
    return problems


def test_each_flag_name_has_one_type_and_one_help_text():
    problems = mismatches(flag_definitions(), HELP_EXCEPTIONS, TYPE_EXCEPTIONS)
    assert not problems, "\n".join(problems)


def test_every_exception_names_an_existing_definition():
    defined = {(d.path, d.name) for d in flag_definitions()}
    stale = sorted((set(HELP_EXCEPTIONS) | set(TYPE_EXCEPTIONS)) - defined)
    assert not stale, f"exceptions for definitions that no longer exist: {stale}"


def test_the_parser_sees_the_recipes_flags():
    defs = {(d.path, d.name): d for d in flag_definitions()}
    assert defs["benchmarks/omni_vs_pruned.py", "step_budgets"].type == "DEFINE_list"
    assert ("benchmarks/omni_vs_pruned.py", "budgets") not in defs
    # Its test utterances are --eval_utterances, as in the end-to-end recipes, with their help text.
    assert defs["benchmarks/omni_vs_pruned.py", "eval_utterances"].help == \
        defs["recipes/end_to_end.py", "eval_utterances"].help
    assert ("benchmarks/omni_vs_pruned.py", "test_utterances") not in defs
    assert defs["recipes/librispeech/export.py", "quantizations"].type == "DEFINE_list"
    assert defs["recipes/end_to_end.py", "quantization"].type.startswith("DEFINE_enum(")
    assert defs["recipes/librispeech/search.py", "tiers"].type == TIERS_HELPER
    assert defs["benchmarks/compare_runs.py", "max_utterances"].type == "DEFINE_integer"  # in a function


def _write(root, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_flag_with_two_meanings_is_reported_with_both_places(tmp_path):
    head = "from absl import flags\n"
    _write(tmp_path, "recipes/a.py", head + 'flags.DEFINE_list("budgets", [], "Sizes.")\n')
    _write(tmp_path, "benchmarks/b.py", head + "\n" + 'flags.DEFINE_list("budgets", ["800"], "Steps.")\n'
           'flags.DEFINE_string("out", "", "Output directory.")\n')
    _write(tmp_path, "benchmarks/c.py", head + 'flags.DEFINE_integer("out", 0, "Output directory.")\n')
    defs = flag_definitions(str(tmp_path), ("recipes", "benchmarks"))
    assert mismatches(defs, {}, {}) == [
        "--budgets: different help in recipes/a.py:2 'Sizes.'; benchmarks/b.py:3 'Steps.'",
        "--out: different type in benchmarks/b.py:4 'DEFINE_string'; benchmarks/c.py:2 'DEFINE_integer'"]
    excepted = ({("benchmarks/b.py", "budgets"): "why"}, {("benchmarks/c.py", "out"): "why"})
    assert mismatches(defs, *excepted) == []


def test_a_computed_flag_name_is_an_error_naming_the_place(tmp_path):
    _write(tmp_path, "recipes/a.py", 'from absl import flags\nNAME = "x"\nflags.DEFINE_bool(NAME, 0, "")\n')
    with pytest.raises(ValueError, match="recipes/a.py:3: DEFINE_bool with a flag name that is not a"):
        flag_definitions(str(tmp_path), ("recipes",))
