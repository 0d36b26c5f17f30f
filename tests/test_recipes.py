"""End-to-end recipes: resumable stages, and recipes/librispeech/run.py on a LibriSpeech-layout tree."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import omni_tf  # noqa: F401
from recipes.stages import Stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_stages_reuse_finished_and_redo_from_a_changed_input(tmp_path):
    calls = []

    def stage(name, value):
        calls.append(name)
        return {"v": value}

    def run_all(a_input):
        st = Stages(str(tmp_path), log=lambda s: None)
        a = st.run("a", {"x": a_input}, lambda: stage("a", a_input))
        return [a, st.run("b", {}, lambda: stage("b", 2))]

    assert run_all(1) == [{"v": 1}, {"v": 2}] and calls == ["a", "b"]
    assert run_all(1) == [{"v": 1}, {"v": 2}] and calls == ["a", "b"]  # both reused from stages/*.json
    assert run_all(5) == [{"v": 5}, {"v": 2}] and calls == ["a", "b", "a", "b"]  # b depends on a: redone


def test_changed_inputs_move_outputs_aside_but_interruption_keeps_them(tmp_path):
    work = tmp_path / "work"

    def train(tag):
        work.mkdir(exist_ok=True)
        (work / tag).write_text(tag)
        return sorted(os.listdir(work))

    logs = []
    first = Stages(str(tmp_path), log=lambda s: None).run("t", {"lr": 1}, lambda: train("a"), (str(work),))
    assert first == ["a"]
    redone = Stages(str(tmp_path), log=logs.append).run("t", {"lr": 2}, lambda: train("b"), (str(work),))
    assert redone == ["b"]  # a changed config starts over ...
    aside = [n for n in os.listdir(tmp_path) if n.startswith("work.replaced-")]
    assert len(aside) == 1 and os.listdir(tmp_path / aside[0]) == ["a"]  # ... the old run is kept aside
    assert any(str(tmp_path / aside[0]) in line for line in logs), logs  # and the log says where
    os.remove(tmp_path / "stages" / "t.json")  # as if killed before the stage finished
    resumed = Stages(str(tmp_path), log=lambda s: None).run("t", {"lr": 2}, lambda: train("c"), (str(work),))
    assert resumed == ["b", "c"]  # no record: the work dir is kept, so training resumes


def test_interrupted_run_with_other_inputs_moves_outputs_aside(tmp_path):
    work = tmp_path / "work"

    def killed():
        work.mkdir()
        (work / "ckpt-1").write_text("lr 1")
        raise KeyboardInterrupt  # as if killed mid-training: started, never finished

    with pytest.raises(KeyboardInterrupt):
        Stages(str(tmp_path), log=lambda s: None).run("t", {"lr": 1}, killed, (str(work),))
    logs = []
    result = Stages(str(tmp_path), log=logs.append).run("t", {"lr": 2}, lambda: sorted(os.listdir(work))
                                                         if work.exists() else [], (str(work),))
    assert result == []  # lr 2 does not resume lr 1's checkpoint ...
    aside = [n for n in os.listdir(tmp_path) if n.startswith("work.replaced-")]
    assert len(aside) == 1 and (tmp_path / aside[0] / "ckpt-1").read_text() == "lr 1"  # ... which is kept
    assert any("interrupted run had other inputs" in line for line in logs), logs


def _fake_training(calls):
    def train(config, workdir):
        calls.append({"minutes": config.training.max_minutes,
                      "kept": sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []})
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, f"ckpt-{len(calls)}"), "w") as f:
            f.write("weights")
        return {"step": 10 * len(calls), "stopped_by": "max_minutes", "trained_s": 60.0 * len(calls)}
    return train


def test_training_stage_survives_a_copy_and_continues_with_a_larger_budget(tmp_path, monkeypatch):
    import shutil

    from omni_tf.configs import experiment
    from recipes import end_to_end as e2e

    calls = []
    monkeypatch.setattr(e2e, "train", _fake_training(calls))

    def stage(out, minutes, lr=None, log_every=None):
        base = experiment.with_data_dir(experiment.get_config("tiny,smoke"), str(out / "data"))
        c = e2e.run_config(base, "omni", 100, minutes)
        with c.unlocked():
            c.training.learning_rate = lr or c.training.learning_rate
            c.training.log_every = log_every or c.training.log_every
        return e2e.train_stage(Stages(str(out), log=lambda s: None), "train", c, str(out / "train" / "omni"))

    first = tmp_path / "a"
    assert stage(first, 1.0)["step"] == 10 and len(calls) == 1
    copy = tmp_path / "b"
    shutil.copytree(first, copy)
    assert stage(copy, 1.0, log_every=1)["step"] == 10 and len(calls) == 1  # another path, cadence: reused
    assert stage(copy, 3.0)["step"] == 20  # a larger time budget continues the same workdir
    assert calls[-1] == {"minutes": 3.0, "kept": ["ckpt-1"]}
    assert stage(copy, 3.0)["step"] == 20 and len(calls) == 2  # finished under that budget: reused
    assert stage(copy, 3.0, lr=9e-3)["step"] == 30  # a result field changed: starts over, old run aside
    assert calls[-1]["kept"] == []
    aside = [n for n in os.listdir(copy / "train") if n.startswith("omni.replaced-")]
    assert len(aside) == 1 and sorted(os.listdir(copy / "train" / aside[0])) == ["ckpt-1", "ckpt-2"]


def test_interrupted_stage_is_redone(tmp_path):
    st = Stages(str(tmp_path), log=lambda s: None)

    def boom():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        st.run("train", {}, boom)
    assert not os.path.exists(tmp_path / "stages" / "train.json")  # nothing recorded: the next run redoes it
    assert Stages(str(tmp_path), log=lambda s: None).run("train", {}, lambda: 7) == 7


def _librispeech_tree(root):
    from omni_tf.data import synthetic

    spec = synthetic.CorpusSpec(num_utterances=48, seed=3, dev_fraction=0.15, test_fraction=0.15)
    synthetic.make_corpus(str(root), spec, num_workers=2, log=lambda s: None)
    for ours, theirs in (("train", "train-clean-100"), ("dev", "dev-other"), ("test", "test-other")):
        os.rename(root / ours, root / theirs)


def test_export_stage_inputs_keep_older_runs_reusable_and_track_sparse():
    from omni_tf.supernet import TierSpec
    from recipes import end_to_end as e2e

    tiers = {"t": TierSpec("sparsity", 0.5)}
    default = e2e.Options(tiers, quantization="int8", parity_utterances=7)
    assert default.export_inputs() == {"q": "int8", "n": 7}  # what runs before --sparse existed recorded
    always = e2e.Options(tiers, quantization="int8", parity_utterances=7, sparse="always")
    assert always.export_inputs() == {"q": "int8", "n": 7, "sparse": "always"}


def test_librispeech_run_end_to_end_and_rerun_reuses_stages(tmp_path):
    tree, out = tmp_path / "LibriSpeech", tmp_path / "out"
    _librispeech_tree(tree)
    cmd = [sys.executable, "-m", "recipes.librispeech.run", f"--librispeech_dir={tree}", f"--out={out}",
           "--config=omni_tf/configs/experiment.py:tiny,smoke", "--train_splits=train-clean-100",
           "--max_steps=4", "--tiers=big=sparsity:0.5,small=level:2", "--quantization=float32",
           "--parity_utterances=2", "--config.sparsity.levels=(0.0,0.5,0.9)",
           "--eval_utterances=3",
           "--config.model.d_model=32", "--config.model.num_layers=1", "--config.model.num_heads=2",
           "--config.model.ff_dim=64", "--config.model.vocab_size=48", "--config.model.pred_hidden=32",
           "--config.model.joint_dim=32", "--config.model.pred_embed_dim=16",
           "--config.model.subsampling_factor=8",  # the demo's front-end: streaming parity at 80 ms frames
           "--config.sparsity.search_population=4", "--config.sparsity.search_generations=1"]
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    for split in ("train-clean-100", "dev-other", "test-other"):
        assert (out / "data" / f"{split}.tsv").exists() and (out / "data" / f"{split}.report.json").exists()
    report = (out / "REPORT.md").read_text()
    assert "| big | omni |" in report and "| small | omni |" in report and (out / "pareto.png").exists()
    choice = json.loads((out / "search" / "choice.json").read_text())  # searched vs uniform on dev, per tier
    for tier in ("big", "small"):
        assert f"| {tier} | omni | {choice[tier]['choice']} |" in report and f"- {tier}: " in report
    from ai_edge_litert.interpreter import Interpreter

    from tflite_export import bundle

    sizes = {}
    for tier in ("big", "small"):
        manifest = json.loads((out / "tiers" / tier / "manifest.json").read_text())
        bundle.validate_manifest(manifest)
        interp = Interpreter(model_path=str(out / "tiers" / tier / "model.tflite"))
        assert set(interp.get_signature_list()) >= {"encode", "predict", "join"}
        sizes[tier] = manifest["bytes_on_disk"]
        assert np.isfinite(manifest["wer"]["tflite"])
    assert sizes["small"] < sizes["big"]  # sparse encoding: the sparser tier is smaller on disk
    # The export recipe on the same run: a byte budget resolved through the per-layer search, LibriSpeech
    # split names (--split), and the parity/size numbers in the manifest.
    budget = int(0.8 * json.loads((out / "tiers" / "big" / "manifest.json").read_text())["bytes_on_disk"])
    export = subprocess.run(
        [sys.executable, "-m", "recipes.librispeech.export",
         "--config=omni_tf/configs/experiment.py:tiny,smoke",
         *[a for a in cmd if a.startswith("--config.model.")], "--config.sparsity.levels=(0.0,0.5,0.9)",
         f"--workdir={out / 'train' / 'omni'}", f"--data_dir={out / 'data'}", "--split=dev-other",
         f"--out={tmp_path / 'export'}", f"--budgets=b:{budget}", "--quantizations=float32",
         "--config.sparsity.search_population=3", "--config.sparsity.search_generations=1",
         "--search_max_batches=1", "--dev_utterances=2", "--tiers=u9=sparsity:0.9"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]
    searched = json.loads((tmp_path / "export" / "b_float32" / "manifest.json").read_text())
    assert searched["sparsity"]["kind"] == "per_kernel" and searched["bytes_on_disk"] <= budget * 1.05
    assert (tmp_path / "export" / "search" / "tier_b.json").exists()
    uniform = json.loads((tmp_path / "export" / "u9_float32" / "manifest.json").read_text())
    assert uniform["sparsity"]["level_index"] == 2 and uniform["sparsity"]["level_sparsity"] == 0.9
    refused = subprocess.run(  # another level set than the checkpoint's: an error naming both
        [*export.args[:3], *[a for a in export.args[3:] if not a.startswith("--config.sparsity.levels")],
         "--config.sparsity.levels=(0.0,0.6,0.9)", "--tiers=u9=level:2", "--budgets="],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0
    assert "(0.0, 0.5, 0.9)" in refused.stderr and "(0.0, 0.6, 0.9)" in refused.stderr
    bad = subprocess.run([*cmd, "--tiers=big:0.5"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "expected name=kind:value" in bad.stderr
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    ran = [line for line in second.stdout.splitlines() if line.endswith("running")]
    assert not ran and second.stdout.count("reused") >= 8, second.stdout


def test_pareto_points_are_bytes_on_disk_measured_for_tiers_size_model_for_levels(tmp_path):
    from recipes import end_to_end as e2e

    tiers = [{"tier": "phone", "series": "omni", "bytes": 700, "nonzero_params": 100, "wer_keras_test": 0.3,
              "wer_tflite": 0.35},
             {"tier": "phone_pruned", "series": "pruned", "bytes": 650, "nonzero_params": 100,
              "wer_keras_test": None, "wer_tflite": 0.4}]
    sizes = {"nonzero_params": 100, "int8_bytes": 900, "int8_sparse_bytes": 500, "float16_bytes": 1800,
             "float16_sparse_bytes": 1000, "float32_bytes": 3600, "float32_sparse_bytes": 2000}
    levels = [{"series": "omni", "name": "uniform_0.00", "wer": 0.2, **sizes, "float32_sparse_bytes": 3600},
              {"series": "omni", "name": "uniform_0.60", "wer": 0.3, **sizes}]
    points = e2e.pareto_points(tiers, levels, "dynamic_int8")
    assert [(p["name"], p["bytes"], p["wer"], p["estimated"]) for p in points] == [
        ("phone", 700, 0.3, False), ("phone_pruned", 650, 0.4, False),  # no Keras test WER: the LiteRT one
        ("uniform_0.00", 900, 0.2, True), ("uniform_0.60", 900, 0.3, True)]  # dense-encoded: one size
    assert points[2]["series"] == "omni uniform levels"
    assert [p["bytes"] for p in e2e.pareto_points([], levels, "float32")] == [3600, 2000]  # sparse-encoded
    assert [p["bytes"] for p in e2e.pareto_points([], levels, "float16")] == [1800, 1800]
    assert [p["bytes"] for p in e2e.pareto_points([], levels, "float32", "never")] == [3600, 3600]
    assert [p["bytes"] for p in e2e.pareto_points([], levels, "int8", "always")] == [500, 500]
    with pytest.raises(ValueError, match="uniform_0.60.*float16_bytes"):
        e2e.pareto_points([], [{"series": "omni", "name": "uniform_0.60", "wer": 0.3, "int8_bytes": 9}],
                          "float16")
    with pytest.raises(ValueError, match="quantization 'int3' unknown"):
        e2e.pareto_points([], levels, "int3")
    from tflite_export import bundle

    png = bundle.pareto_plot(points, str(tmp_path / "p.png"), wer_key="wer")
    assert os.path.getsize(png) > 1000


def test_report_shows_extra_test_splits_beside_test(tmp_path):
    from recipes import end_to_end as e2e

    extra = {"test_ood": {"speaker": {"wer": 0.7}, "uniform_0.00": {"wer": 0.6}}}
    row = {"tier": "speaker", "series": "omni", "config": "uniform 0.6", "sparsity": 0.6,
           "nonzero_params": 1000, "bytes": 5000, "wer_keras_test": 0.5, "wer_keras": 0.5, "wer_tflite": 0.5,
           "ms_per_chunk": 1.0, "rtf": 0.1, "train_minutes": 1.0}
    rows = [e2e._with_extra(row, extra, "speaker", "wer_keras_")]
    levels = [e2e._with_extra({"series": "omni", "name": "uniform_0.00", "wer": 0.4, "cer": 0.2,
                               "nonzero_params": 2000, "int8_sparse_bytes": 3000, "int8_bytes": 3000,
                               "utterances": 9},
                              extra, "uniform_0.00", "wer_")]
    e2e.write_report(rows, str(tmp_path), "pre", levels)
    text = (tmp_path / "REPORT.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| tier"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[cells.index("wer_keras_test") + 1] == "wer_keras_test_ood"
    data = next(line for line in text.splitlines() if line.startswith("| speaker"))
    values = [c.strip() for c in data.strip("|").split("|")]
    assert float(values[cells.index("wer_keras_test_ood")]) == 0.7
    level_header = next(line for line in text.splitlines() if line.startswith("| series"))
    assert "wer_test_ood" in level_header and "`test_ood`: out of domain" in text


def recipe_flag_values(args, config="tiny,demo"):
    """absl FlagValues with an end-to-end recipe's flags (``--config``, ``--max_minutes``, ``--tiers`` and
    the others ``Options.from_flags`` / ``run_recipe`` read), parsed from ``args``."""
    from absl import flags as absl_flags
    from ml_collections import config_flags

    from omni_tf.configs import experiment
    from recipes.tier_flags import define_tiers_flag

    fv = absl_flags.FlagValues()
    config_flags.DEFINE_config_file("config", f"{experiment.__file__}:{config}", flag_values=fv,
                                    sys_argv=["prog", *args])
    absl_flags.DEFINE_string("out", None, "", flag_values=fv)
    absl_flags.DEFINE_float("max_minutes", 10.0, "", flag_values=fv)
    absl_flags.DEFINE_integer("max_steps", 0, "", flag_values=fv)  # librispeech/run's: 0 = the config's
    define_tiers_flag(["speaker=sparsity:0.6", "phone=sparsity:0.75", "wearable=sparsity:0.9"], "",
                      flag_values=fv)
    absl_flags.DEFINE_string("quantization", "dynamic_int8", "", flag_values=fv)
    absl_flags.DEFINE_string("sparse", "auto", "", flag_values=fv)
    absl_flags.DEFINE_integer("parity_utterances", 1, "", flag_values=fv)
    absl_flags.DEFINE_integer("eval_utterances", 0, "", flag_values=fv)
    absl_flags.DEFINE_bool("compare_individual", False, "", flag_values=fv)
    absl_flags.DEFINE_string("sparsity_granularity", None, "", flag_values=fv)
    fv(["prog", *args])
    return fv


@pytest.mark.parametrize("args,train_levels", [
    ([], (0.6, 0.75, 0.9)),  # the tiers' sparsities, not the config's
    (["--config.sparsity.train_levels=(0.6,)"], (0.6,)),  # given explicitly: kept (was replaced)
])
def test_run_recipe_trains_the_tier_sparsities_as_levels(tmp_path, monkeypatch, args, train_levels):
    from recipes import end_to_end as e2e

    seen = {}

    def run_tiers(stages, out, config, opts):
        seen["config"] = config
        return [], [], {}

    monkeypatch.setattr(e2e, "run_tiers", run_tiers)
    monkeypatch.setattr(e2e, "print_report", lambda *a, **k: None)
    flag_values = recipe_flag_values([f"--out={tmp_path}", *args])
    e2e.run_recipe(flag_values, lambda stages, out, c: str(tmp_path),
                   lambda stages, out, d: (flag_values.config, d), lambda c, m: "")
    trained = seen["config"].sparsity
    assert trained.levels == (0.0, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9)  # 0.75: a level of its own
    assert trained.train_levels == train_levels


@pytest.mark.parametrize("argv,want", [
    ([], 10.0),  # the recipe's --max_minutes default
    (["--max_minutes=5"], 5.0),
    (["--config.training.max_minutes=30"], 30.0),  # was silently replaced by --max_minutes's default
    (["--config.training.max_minutes=30", "--max_minutes=30"], 30.0),
])
def test_the_training_budget_comes_from_max_minutes_or_the_config_field_given(argv, want):
    from omni_tf.configs import experiment
    from recipes import end_to_end as e2e

    opts = e2e.Options.from_flags(recipe_flag_values(argv))
    assert opts.max_minutes == want
    assert e2e.run_config(experiment.get_config("tiny,demo"), "omni", 10, opts.max_minutes
                          ).training.max_minutes == want
    both = recipe_flag_values(["--config.training.max_minutes=30", "--max_minutes=5"])
    with pytest.raises(ValueError, match="--max_minutes=5.0 and --config.training.max_minutes=30.0"):
        e2e.Options.from_flags(both)
    steps = [e2e.flag_or_config(recipe_flag_values(a), "max_steps", "training.max_steps")
             for a in ([], ["--max_steps=5"], ["--config.training.max_steps=7"])]
    assert steps == [0, 5, 7]
    with pytest.raises(ValueError, match="--max_steps=5 and --config.training.max_steps=7"):
        e2e.flag_or_config(recipe_flag_values(["--max_steps=5", "--config.training.max_steps=7"]),
                           "max_steps", "training.max_steps")
