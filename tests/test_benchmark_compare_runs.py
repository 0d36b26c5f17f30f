"""benchmarks/compare_runs.py: a one-step smoke run against itself (all ties, diff 0), the decode cache, the
refusals (a level not in a run, another test manifest or tokenizer) and the default levels."""
import json
import os
import shutil

import pytest

import omni_tf  # noqa: F401
from benchmarks import compare_runs as cr
from benchmarks import decodes
from tests.training_helpers import train_smoke_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run_demo-like output dir: ``train/omni`` trained 1 step (``training_helpers.train_smoke_run``)."""
    return train_smoke_run(str(tmp_path_factory.mktemp("run")))


def _copy_run(run_dir, tmp_path, **paths) -> str:
    """A copy of the run's workdir whose config.json sets the given ``paths`` fields."""
    workdir = str(tmp_path / "copy")
    shutil.copytree(os.path.join(run_dir, "train", "omni"), workdir)
    path = os.path.join(workdir, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["paths"].update(paths)
    with open(path, "w") as f:
        json.dump(config, f)
    return workdir


def test_a_run_against_itself_is_all_ties_and_a_rerun_decodes_nothing(run_dir, tmp_path, monkeypatch):
    a, b = cr.load_run("A", run_dir), cr.load_run("B", os.path.join(run_dir, "train", "omni"))
    assert a.workdir == b.workdir and a.config.sparsity.levels == (0.0, 0.5, 0.8)  # tuples again
    out = str(tmp_path / "cmp")
    rows = cr.compare(a, b, None, out, bootstrap=50)
    assert [r["level"] for r in rows] == ["0", "0.5", "0.8"]  # default: every level of both
    for r in rows:
        assert (r["diff"], r["diff_lo"], r["diff_hi"], r["verdict"]) == (0.0, 0.0, 0.0, "tie")
        assert r["wer_a"] == r["wer_b"] and r["utterances"] > 0
    cached = json.load(open(os.path.join(out, "decodes.json")))["evals"]
    assert len(cached) == 3  # one decode per level: A and B are the same checkpoint
    assert all(k.startswith(f"{a.workdir}@1|") for k in cached)  # keyed by workdir and checkpoint step

    def fail(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(decodes.evaluation, "transcribe", fail)
    monkeypatch.setattr(decodes, "test_batches", fail)
    assert cr.compare(a, b, [0.5, 0], out, bootstrap=50) == rows[1::-1]
    with pytest.raises(AssertionError, match="decoded again"):  # a level not cached yet is decoded
        cr.compare(a, b, [0.8], str(tmp_path / "other"), bootstrap=50)

    text = cr.report(rows, a, b, out, {"split": "test", "manifest": "test.tsv", "bootstrap": 50, "seed": 0,
                                       "command": "compare_runs"})
    assert "| level | WER A | WER B | diff A-B [95% CI] | verdict |" in text
    assert "| 0.5 |" in text and "+0.0 [+0.0, +0.0] | tie |" in text and "50 resamples, seed 0" in text
    assert open(os.path.join(out, "compare.md")).read() == text
    assert json.load(open(os.path.join(out, "compare.json")))["rows"] == rows


def test_a_level_not_in_a_run_raises_naming_the_run_and_its_levels(run_dir, tmp_path):
    a = cr.load_run("A", run_dir)
    with pytest.raises(ValueError, match=r"run A \(.*\): sparsity \[0\.3\] not a level.*"
                                         r"\[0\.0, 0\.5, 0\.8\]"):
        cr.compare(a, a, [0, 0.3], str(tmp_path))


def test_other_test_utterances_or_tokenizer_are_refused_naming_both_files(run_dir, tmp_path):
    a = cr.load_run("A", run_dir)
    data = os.path.join(run_dir, "data")
    other = tmp_path / "other"
    other.mkdir()
    lines = open(os.path.join(data, "test.tsv")).read().splitlines(keepends=True)
    (other / "test.tsv").write_text("".join(lines[:-1]))  # one utterance fewer
    b = cr.load_run("B", _copy_run(run_dir, tmp_path, test_manifest=str(other / "test.tsv")))
    with pytest.raises(ValueError, match=f"test manifest {data}/test.tsv \\(A\\) and {other}/test.tsv "
                                         r"\(B\) list different utterances.*--allow_different_data"):
        cr.compare(a, b, [0], str(tmp_path / "cmp"))
    moved = tmp_path / "moved"  # the same utterances elsewhere (other audio paths): the same test set
    moved.mkdir()
    (moved / "test.tsv").write_text("".join(lines).replace(run_dir, "/elsewhere"))
    assert cr.data_differences(a, cr.load_run("B", _copy_run(run_dir, tmp_path / "m", test_manifest=str(
        moved / "test.tsv"))), "test") == []
    (other / "spm.model").write_bytes(b"another tokenizer")
    b = cr.load_run("B", _copy_run(run_dir, tmp_path / "s", spm_model=str(other / "spm.model")))
    assert cr.data_differences(a, b, "test") == [f"spm.model {data}/spm.model (A) and {other}/spm.model (B) "
                                                 "differ"]


def test_default_levels_are_the_levels_both_runs_have(run_dir, tmp_path):
    a = cr.load_run("A", run_dir)  # levels (0, 0.5, 0.8), train_levels (0.5,)
    b = cr.load_run("B", run_dir)
    with b.config.unlocked():  # a uniform-sampling run whose tiers 0.3 / 0.8 joined its levels
        b.config.sparsity.sampler, b.config.sparsity.train_levels = "uniform", (0.6, 0.75, 0.9)
        b.config.sparsity.levels = (0.0, 0.3, 0.5, 0.8)
    assert cr.default_levels([a, b]) == (0.0, 0.5, 0.8)  # not train_levels: B cannot decode 0.6 / 0.75
    with b.config.unlocked():
        b.config.training.mode, b.config.sparsity.target_sparsity = "pruned", 0.8
    assert cr.default_levels([a, b]) == (0.0, 0.8) and cr.run_levels(b.config) == (0.0, 0.8)
    with b.config.unlocked():
        b.config.training.mode, b.config.sparsity.levels = "omni", (0.1, 0.7)
    with pytest.raises(ValueError, match=r"no sparsity level in common \(A: \[0\.0, 0\.5, 0\.8\]; "
                                         r"B: \[0\.1, 0\.7\]\): give --levels"):
        cr.default_levels([a, b])
    with pytest.raises(FileNotFoundError, match="not a training workdir"):
        cr.load_run("A", str(tmp_path))


def test_flags_name_the_bootstrap_seed_not_a_corpus_seed():
    from absl import flags

    fv = flags.FlagValues()
    cr.define_flags(fv)
    fv(["compare_runs", "--a=x", "--b=y", "--bootstrap_seed=3"])
    assert fv.bootstrap_seed == 3 and "seed" not in fv  # --seed is a corpus seed in the recipes
