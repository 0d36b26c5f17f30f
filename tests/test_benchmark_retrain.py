"""benchmarks/retrain.py: override parsing (types, tuples, the refusals), a smoke retrain of a one-step run
whose config.json differs from the source's in the overridden field only, retrain.json, resume and
--compare (the retrain as A against the source as B)."""
import json
import os
import sys

import pytest
from absl import app, flags

import omni_tf  # noqa: F401
from benchmarks import compare_runs as cr
from benchmarks import retrain
from omni_tf.configs import experiment
from tests.training_helpers import train_smoke_run


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _run(argv, monkeypatch):
    """``python -m benchmarks.retrain *argv`` in-process, on fresh flags: (record, FlagValues)."""
    fv = flags.FlagValues()
    retrain.define_flags(fv)
    monkeypatch.setattr(sys, "argv", ["retrain.py", *argv])
    return retrain.run(retrain.parse_argv(["retrain.py", *argv], fv), fv)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_smoke_run(str(tmp_path_factory.mktemp("run")))


@pytest.mark.parametrize("field,raw,current,want", [
    ("training.learning_rate", "3e-4", 1.5e-3, 3e-4),
    ("training.max_minutes", "7", 0.0, 7.0),
    ("training.max_steps", "12", 6, 12),
    ("data.speed_perturb", "true", False, True),
    ("data.speed_perturb", "0", True, False),
    ("sparsity.block", "4x1", "1x1", "4x1"),
    ("sparsity.train_levels", "0.6,0.9", (0.6, 0.75, 0.9), (0.6, 0.9)),
    ("sparsity.train_levels", "(0, 0.5,)", (0.6, 0.75, 0.9), (0.0, 0.5)),
    ("sparsity.train_levels", "[0.5]", (0.6,), (0.5,)),
    ("variants", "smoke,'demo'", ("smoke",), ("smoke", "demo")),
    ("data.noise_snr_db", "()", (10.0, 30.0), ()),
])
def test_values_parse_to_the_type_of_the_source_value(field, raw, current, want):
    got = retrain.parse_value(field, raw, current)
    assert got == want and type(got) is type(want)
    if isinstance(want, tuple):
        assert [type(g) for g in got] == [type(w) for w in want]


@pytest.mark.parametrize("raw,current,kind", [
    ("1.5", 6, "int"), ("fast", 1e-3, "float"), ("maybe", True, "bool"),
    ("0.5,x", (0.6, 0.9), "tuple of float"), ("0.5,,0.6", (0.6,), "tuple of float")])
def test_an_unparsable_value_names_field_value_and_type(raw, current, kind):
    with pytest.raises(ValueError, match=rf"--config\.a\.b={raw!r}: not a {kind} \(the type of the source's "
                                         rf"value"):
        retrain.parse_value("a.b", raw, current)


def test_overrides_are_applied_to_a_copy():
    config = experiment.get_config("tiny,smoke")
    new, changes = retrain.apply_overrides(config, {"training.ctc_weight": "0.2", "sparsity.levels": "0,0.5"})
    assert new.training.ctc_weight == 0.2 and new.sparsity.levels == (0.0, 0.5)
    assert config.training.ctc_weight == 0.0  # the source's config is untouched
    assert changes == {"training.ctc_weight": {"source": 0.0, "retrain": 0.2},
                       "sparsity.levels": {"source": config.sparsity.levels, "retrain": (0.0, 0.5)}}
    new, _ = retrain.apply_overrides(config, {"training.log_every": "7", "training.max_steps": "9"})
    assert new.training.max_steps == 9  # the budget is an A/B


@pytest.mark.parametrize("overrides,message", [
    ({"training.ctc_wieght": "0.2"},
     r"--config\.training\.ctc_wieght: unknown field 'ctc_wieght' of training; its fields: .*\bctc_weight\b"),
    ({"trainig.ctc_weight": "0.2"}, r"unknown field 'trainig' of the config; its fields: data, model"),
    ({"training": "{}"}, r"--config\.training is a section: set one of its fields"),
    ({"training.mode.x": "1"}, r"--config\.training\.mode\.x: training\.mode is a field"),
    ({"training.learning_rate": "0.0015"}, r"--config\.training\.learning_rate='0\.0015' equals the source's "
                                           r"value 0\.0015: not an A/B"),
    ({"sparsity.train_levels": "0.6,0.75,0.9"}, r"--config\.sparsity\.train_levels='0\.6,0\.75,0\.9' equals"),
    ({"paths.spm_model": "/x/spm.model"}, r"--config\.paths\.spm_model: the retrain trains on the source's"),
    ({"training.log_every": "7"}, r"--config\.training\.log_every: changes nothing training computes"),
])
def test_an_unknown_equal_data_or_result_neutral_override_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        retrain.apply_overrides(experiment.get_config("tiny,smoke"), overrides)


def test_override_arguments_are_required_and_well_formed():
    assert retrain.override_args(["--from=x", "--config.training.seed=1"]) == {"training.seed": "1"}
    with pytest.raises(app.UsageError, match="at least one --config"):
        retrain.override_args(["--from=x"])
    with pytest.raises(app.UsageError, match=r"--config\.training\.seed: give an override as"):
        retrain.override_args(["--config.training.seed"])
    with pytest.raises(app.UsageError, match=r"--config\.training\.seed given twice"):
        retrain.override_args(["--config.training.seed=1", "--config.training.seed=2"])


def test_the_command_line_is_checked_before_training(run_dir, tmp_path, monkeypatch):
    out = str(tmp_path / "ab")
    with pytest.raises(app.UsageError, match="at least one --config"):
        _run([f"--from={run_dir}", f"--out={out}"], monkeypatch)
    with pytest.raises(app.UsageError, match="--levels: only with --compare"):
        _run([f"--from={run_dir}", f"--out={out}", "--levels=0", "--config.training.seed=1"], monkeypatch)
    with pytest.raises(app.UsageError, match=r"unexpected arguments \['stray'\]"):
        _run([f"--from={run_dir}", f"--out={out}", "stray", "--config.training.seed=1"], monkeypatch)
    with pytest.raises(flags.Error, match="config"):  # --config=file is not a flag of this tool
        _run([f"--from={run_dir}", f"--out={out}", "--config=x.py"], monkeypatch)
    for into in (run_dir, os.path.join(run_dir, "train", "omni", "ab"), os.path.dirname(run_dir)):
        with pytest.raises(ValueError, match="is, holds or lies inside the source's workdir"):
            _run([f"--from={run_dir}", f"--out={into}", "--config.training.seed=1"], monkeypatch)
    assert not os.path.exists(out)


def test_retrain_changes_one_field_records_itself_resumes_and_compares(run_dir, tmp_path, monkeypatch,
                                                                       capsys):
    out = str(tmp_path / "ab" / "lr")
    argv = [f"--from={run_dir}", f"--out={out}", "--config.training.learning_rate=3e-4"]
    record = _run(argv, monkeypatch)
    source_dir = os.path.join(run_dir, "train", "omni")
    src, new = (json.load(open(os.path.join(d, "config.json"))) for d in (source_dir, out))
    src, new = _flat(src), _flat(new)
    assert {k for k in src if src[k] != new[k]} == {"training.learning_rate"} and set(src) == set(new)
    assert new["training.learning_rate"] == 3e-4

    assert json.load(open(os.path.join(out, "retrain.json"))) == json.loads(json.dumps(record))
    assert record["source"]["workdir"] == source_dir and record["source"]["given"] == run_dir
    assert record["source"]["step"] == 1 and record["source"]["train_metrics"]["stopped_by"] == "max_steps"
    assert record["overrides"] == {"training.learning_rate": {"source": 1.5e-3, "retrain": 3e-4}}
    assert record["command"] == "python -m benchmarks.retrain " + " ".join(argv)
    assert record["workdir"] == out
    assert record["steps"] == {"retrain": 1, "source": 1}
    (first,) = record["invocations"]
    assert first["wall_s"] > 0 and first["cpu_s"] > 0
    assert len(first["loadavg_start"]) == 3 and len(first["loadavg_end"]) == 3
    m = first["metrics"]
    assert (m["step"], m["stopped_by"], m["restored_from"]) == (1, "max_steps", None)
    assert "step 1 (stopped by max_steps)" in capsys.readouterr().out

    # the same command again, now with --compare: resumes the finished run (no step) and compares
    record = _run([*argv, "--compare", "--levels=0.5", "--bootstrap=20", "--bootstrap_seed=3"], monkeypatch)
    assert len(record["invocations"]) == 2 and record["invocations"][0] == first
    m = record["invocations"][1]["metrics"]
    assert m["restored_from"] and (m["step"], m["optimizer_iterations"]) == (1, 1)
    text = capsys.readouterr().out
    assert "| level | WER A | WER B | diff A-B [95% CI] | verdict |" in text and "| 0.5 |" in text
    compared = json.load(open(os.path.join(out, "compare", "compare.json")))
    assert (compared["a"]["workdir"], compared["a"]["step"]) == (out, 1)
    assert (compared["b"]["workdir"], compared["b"]["step"]) == (source_dir, 1)
    assert (compared["bootstrap"], compared["seed"]) == (20, 3)
    assert compared["command"].endswith("--bootstrap=20 --bootstrap_seed=3")
    assert [r["level"] for r in compared["rows"]] == ["0.5"] and compared["rows"][0]["utterances"] > 0
    assert cr.load_run("A", out).config.training.learning_rate == 3e-4  # compare_runs reads <out> as is

    with pytest.raises(SystemExit, match=r"differing fields: training\.learning_rate: 0\.0003 -> 0\.0001"):
        _run([f"--from={run_dir}", f"--out={out}", "--config.training.learning_rate=1e-4"], monkeypatch)
