"""benchmarks/omni_vs_pruned.py: the whole driver in --smoke mode (table, results JSON, plot, rerun reuse)
and its pure pieces (configs per budget, when a budget may continue another, compute split, verdict)."""
import json
import os
import subprocess
import sys

import pytest

import omni_tf  # noqa: F401
from benchmarks import omni_vs_pruned as ovp
from omni_tf.configs import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_run_config_scales_the_ramp_and_adds_tier_levels():
    base = experiment.get_config("tiny,demo")  # max_steps 2500, ramp 1000-2000 every 80 steps
    c = ovp.run_config(base, "omni", 800, {"phone": 0.75}, None, scale_schedule=True)
    assert (c.training.max_steps, c.sparsity.begin_step, c.sparsity.end_step, c.sparsity.frequency) == \
        (800, 320, 640, 26)
    assert c.sparsity.levels == (0.0, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9) and c.training.max_minutes == 0.0
    assert c.sparsity.train_levels == (0.75,)  # the tiers samplers train the benchmark's tiers
    pruned = ovp.run_config(base, "pruned", 800, {"phone": 0.75}, 0.75, scale_schedule=False)
    assert pruned.training.mode == "pruned" and pruned.sparsity.target_sparsity == 0.75
    assert (pruned.sparsity.begin_step, pruned.sparsity.end_step) == (1000, 2000)
    assert base.training.max_steps == 2500  # the input config is not modified
    assert base.sparsity.levels == (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)


def test_config_digest_ignores_the_variants_record_but_not_what_they_set():
    import hashlib

    demo = experiment.get_config("tiny,demo")
    c = ovp.run_config(demo, "omni", 800, {"phone": 0.75}, None, scale_schedule=True)
    digest = ovp.config_digest(c)
    del c["variants"]  # a config as it was before the record existed: the same digest (cached runs match)
    del c.sparsity["per_level_norm"]  # likewise a field added later, at its default (workdir.ADDED_FIELDS)
    del c.sparsity["tier_weights"]
    assert digest == hashlib.sha256(c.to_json_best_effort(indent=1, sort_keys=True).encode()).hexdigest()[:16]
    finetune = ovp.run_config(experiment.with_variant(demo, "finetune"), "omni", 800, {"phone": 0.75}, None,
                              scale_schedule=True)
    assert ovp.config_digest(finetune) != digest


def test_only_horizon_free_schedules_continue_a_shorter_budget():
    c = experiment.get_config("tiny,demo")
    assert not ovp.horizon_free(c, scale_schedule=False)  # cosine ends at max_steps
    c.training.decay = "constant"
    assert ovp.horizon_free(c, scale_schedule=False)
    assert not ovp.horizon_free(c, scale_schedule=True)  # the ramp moves with the budget
    c.training.decay, c.training.eden_progress = "eden", 0.3
    assert not ovp.horizon_free(c, scale_schedule=False)
    c.training.eden_progress = 0.0
    assert ovp.horizon_free(c, scale_schedule=False)


def test_compute_protocol_splits_omni_cost_over_the_tiers():
    omni, pruned = {"cpu_s": 300.0}, {"cpu_s_per_step": 0.5}
    assert ovp.compute_steps(omni, pruned, 900, 3, "cpu") == 200  # 100 CPU-s each at 0.5 s/step
    assert ovp.compute_steps(omni, pruned, 900, 3, "steps") == 300
    assert ovp.compute_steps({"cpu_s": 0.1}, pruned, 2, 3, "steps") == 1  # never 0 steps


def test_verdict_and_tiers():
    assert [ovp.verdict(-0.05, -0.01), ovp.verdict(-0.01, 0.02), ovp.verdict(0.01, 0.03)] == \
        ["omni better", "tie", "pruned better"]
    from omni_tf.supernet import parse_tiers

    assert ovp.tier_sparsities(parse_tiers(["a=sparsity:0.6", "b=sparsity:0.9"])) == {"a": 0.6, "b": 0.9}
    with pytest.raises(ValueError, match="name=sparsity:S"):
        ovp.tier_sparsities(parse_tiers(["a=level:2"]))


def test_omni_variants_parse_registry_custom_and_base():
    sp = experiment.get_config("tiny,demo").sparsity
    got = ovp.parse_omni_variants(["base", "tiers_random_kd", "kd03=sampler:uniform+distill_weight:0.3"
                                   "+dense_warmup:false+subnets_per_step:2"], sp)
    assert got == {"base": {}, "tiers_random_kd": {"sampler": "tiers_random", "distill_weight": 0.5,
                                                   "distill_mode": "mix"},
                   "kd03": {"sampler": "uniform", "distill_weight": 0.3, "dense_warmup": False,
                            "subnets_per_step": 2}}
    assert list(got) == ["base", "tiers_random_kd", "kd03"]  # the order given
    assert ovp.run_name("omni", 800) == "omni_s800"  # base: the names of a driver without variants
    assert ovp.run_name("omni", 800, variant="base") == "omni_s800"
    assert ovp.run_name("omni", 800, variant="kd03") == "omni_kd03_s800"
    assert ovp.run_name("pruned", 800, "phone", variant="kd03") == "pruned_phone_s800"
    c = ovp.with_omni_variant(experiment.get_config("tiny,demo"), got["kd03"])
    assert (c.sparsity.sampler, c.sparsity.distill_weight, c.sparsity.subnets_per_step) == ("uniform", 0.3, 2)


@pytest.mark.parametrize("items, message", [
    (["nope"], "unknown variant 'nope'"),
    (["x=sampler:zigzag"], "unknown omni sampler 'zigzag'"),
    (["x=sampler:fixed"], "unknown omni sampler 'fixed'"),  # the pruned baseline's sampler is not omni's
    (["x=bogus:1"], "no field 'bogus'"),
    (["x=distill_weight:lots"], "distill_weight wants a float"),
    (["x=dense_warmup:maybe"], "dense_warmup wants a bool"),
    (["x=distill_mode:mix+distill_weight:2.0"], "'x'.*out of range"),
    (["x=levels:0.5"], "tuple field sparsity.levels"),
    (["x=sampler"], "name=field:value"),
    (["x=sampler:uniform+sampler:tiers"], "distinct fields"),
    (["uniform=sampler:tiers"], "'uniform' is a registered variant"),
    (["Bad-Name"], "lower case"),
    (["uniform", "uniform"], "given twice"),
    ([], "empty"),
])
def test_omni_variants_bad_input_raises_naming_it(items, message):
    with pytest.raises(ValueError, match=message):
        ovp.parse_omni_variants(items, experiment.get_config("tiny,demo").sparsity)


def test_compare_trains_each_variant_against_the_same_pruned_runs(monkeypatch, tmp_path):
    trained, order = {}, []  # run name -> config digest; names in training order

    def train_run(results, out, name, config, previous):
        digest = ovp.config_digest(config)
        assert trained.setdefault(name, digest) == digest  # a name is always the same config
        order.append(name)
        cpu = {"omni_s4": 40.0, "omni_kd_s4": 80.0}.get(name, float(config.training.max_steps))
        return {"steps": int(config.training.max_steps), "cpu_s": cpu, "wall_s": cpu, "loadavg": [0.0] * 3,
                "cpu_s_per_step": 1.0, "sampler": config.sparsity.sampler,
                "distill_weight": config.sparsity.distill_weight}

    def evaluate_run(results, out, name, config, levels, data):
        wer = 0.3 if name.startswith("omni") else 0.4
        hyps = ["a b", "c x"] if wer == 0.3 else ["a x", "c x"]
        return {t: {"wer": wer, "ids": ["u1", "u2"], "refs": ["a b", "c d"], "hyps": hyps, "utterances": 2}
                for t in levels}

    monkeypatch.setattr(ovp, "train_run", train_run)
    monkeypatch.setattr(ovp, "evaluate_run", evaluate_run)
    monkeypatch.setattr(ovp, "test_batches", lambda *a: ([], None))
    base, tiers = experiment.get_config("tiny,demo"), {"big": 0.5, "small": 0.9}
    variants = ovp.parse_omni_variants(["base", "kd=sampler:tiers_random+distill_weight:0.5"
                                        "+distill_mode:mix"], base.sparsity)
    rows = ovp.compare(base, str(tmp_path), "test.tsv", tiers, [4], ["steps", "compute"], "cpu",
                       bootstrap=20, variants=variants)
    # cpu split: base omni 40 CPU-s / 2 tiers / 1 s per step = 20 steps; kd omni 80 -> 40 steps
    assert set(trained) == {"omni_s4", "omni_kd_s4", "pruned_big_s4", "pruned_small_s4", "pruned_big_s20",
                            "pruned_small_s20", "pruned_big_s40", "pruned_small_s40"}
    assert order[:2] == ["omni_s4", "omni_kd_s4"]
    assert trained["omni_s4"] != trained["omni_kd_s4"]
    with_variants = dict(trained)
    for others in (None, {"uniform": ovp.OMNI_VARIANTS["uniform"]}):  # pruned configs whatever the variants
        trained.clear()
        ovp.compare(base, str(tmp_path), "test.tsv", tiers, [4], ["steps"], bootstrap=20, variants=others)
        pruned = {n: d for n, d in trained.items() if n.startswith("pruned")}
        assert set(pruned) == {"pruned_big_s4", "pruned_small_s4"}
        assert pruned == {n: with_variants[n] for n in pruned}
    assert set(trained) - set(pruned) == {"omni_uniform_s4"}
    assert len(rows) == 2 * 2 * 2  # protocols x variants x tiers at one budget
    big = [(r["protocol"], r["omni"], r["omni_run"], r["pruned_steps"]) for r in rows if r["tier"] == "big"]
    assert big == [("steps", "base", "omni_s4", 4), ("steps", "kd", "omni_kd_s4", 4),
            ("compute", "base", "omni_s4", 20), ("compute", "kd", "omni_kd_s4", 40)]
    kd = [r for r in rows if r["omni"] == "kd" and r["protocol"] == "compute"]
    assert {r["omni_cpu_min"] for r in kd} == {80 / 60} and {r["pruned_cpu_min"] for r in kd} == {80 / 60}
    table = ovp.markdown(rows)
    assert sum(" | compute | kd | " in line for line in table.splitlines()) == 2  # one row per tier
    ovp.plot(rows, str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_smoke_driver_writes_table_json_plot_and_rerun_skips_finished(tmp_path):
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "benchmarks.omni_vs_pruned", "--smoke", f"--out={out}",
           "--tiers=big=sparsity:0.5,small=sparsity:0.9", "--bootstrap=50", "--compute_unit=steps",
           "--omni_variants=base,tiers_random"]
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    # budgets 1, 2 steps; protocol compute in steps: each of the 2 pruned models gets max(1, budget // 2),
    # which are the steps runs of budget 1 (reused, not trained again), for both omni variants
    assert set(results["runs"]) == {"omni_s1", "omni_s2", "omni_tiers_random_s1", "omni_tiers_random_s2",
                                    "pruned_big_s1", "pruned_big_s2", "pruned_small_s1",
                                    "pruned_small_s2"}
    for run in results["runs"].values():
        assert run["cpu_s"] > 0 and run["wall_s"] > 0 and len(run["loadavg"]) == 3
    ev = results["evals"]["omni_s2/small"]
    assert len(ev["hyps"]) == len(ev["refs"]) == len(ev["ids"]) == ev["utterances"] > 0
    assert ev["ids"] == results["evals"]["pruned_small_s2/small"]["ids"]
    table = (out / "RESULTS.md").read_text()
    header = "| " + " | ".join(ovp.TABLE_COLUMNS) + " |"
    assert header in table and (out / "curves.png").stat().st_size > 0
    body = [line for line in table.splitlines() if line.startswith("| ") and line != header]
    assert len(body) == 2 * 2 * 2 * 2  # budgets x protocols x omni variants x tiers
    assert {line.split(" | ")[1] for line in body} == {"steps", "compute"}
    assert [line.split(" | ")[2] for line in body].count("tiers_random") == 8  # the omni variant column
    assert [line.split(" | ")[6] for line in body if " compute " in line] == ["1"] * 8  # pruned_steps
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" not in second.stderr and "step 1" not in second.stderr  # nothing trained again
    assert json.loads((out / "results.json").read_text())["runs"] == results["runs"]


def test_smoke_driver_continues_a_shorter_budget_when_no_schedule_has_a_horizon(tmp_path):
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "benchmarks.omni_vs_pruned", "--smoke", f"--out={out}",
           "--tiers=t=sparsity:0.5", "--protocols=steps", "--bootstrap=20",
           "--config.training.decay=constant", "--noscale_schedule"]
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads((out / "results.json").read_text())["runs"]
    for side in ("omni_s", "pruned_t_s"):
        first, second = runs[f"{side}1"], runs[f"{side}2"]
        assert first["continued_from"] is None and second["continued_from"] == f"{side}1"
        assert second["steps"] == 2 and second["cpu_s"] > first["cpu_s"]  # its cost includes the first's
    assert "resumed from" in proc.stderr  # the 2-step runs started from the 1-step checkpoints
    changed = subprocess.run([*cmd[:-2]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert changed.returncode != 0 and "another config" in changed.stderr  # cosine + scaled ramp != cached


def _data_dir(path, spm: bytes, cmvn: str) -> str:
    path.mkdir()
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        (path / name).write_text(f"{name} of {path.name}\n")
    (path / "spm.model").write_bytes(spm)
    (path / "cmvn.json").write_text(cmvn)
    return str(path)


def test_pretrained_keeps_a_data_dir_with_the_bundle_spm_and_cmvn(tmp_path):
    from recipes import end_to_end as e2e
    from tests.training_helpers import make_bundle, tiny_config

    bundle = make_bundle(str(tmp_path), tiny_config("omni"))  # spm b"spm", empty CMVN
    shipped = _data_dir(tmp_path / "data_shipped", b"spm", '{"mean": [], "std": []}')
    base, out = experiment.get_config("tiny,demo"), str(tmp_path / "cmp")
    c, data_dir = ovp.pretrained_inputs(base, shipped, bundle, out)
    want, _, _ = e2e.shipped_config(ovp.with_data(base, shipped), bundle)  # the config before the fix
    assert data_dir == shipped and c.to_dict() == want.to_dict()
    assert ovp.config_digest(c) == ovp.config_digest(want)  # cached runs of such a benchmark stay valid
    assert not os.path.exists(os.path.join(out, "data_shipped"))


def test_pretrained_redirects_another_spm_and_cmvn_to_the_bundle_files(tmp_path):
    from omni_tf.training import sources
    from tests.training_helpers import make_bundle, tiny_config

    bundle = make_bundle(str(tmp_path), tiny_config("omni"))
    demo = _data_dir(tmp_path / "data", b"demo corpus spm", '{"mean": [1.0], "std": [2.0]}')
    base, out = experiment.get_config("tiny,demo"), str(tmp_path / "cmp")
    c, data_dir = ovp.pretrained_inputs(base, demo, bundle, out)
    assert data_dir == os.path.join(out, "data_shipped") and c.training.init_from == bundle
    spm, cmvn = sources.spm_cmvn_paths(c)
    assert (spm, cmvn) == (os.path.join(data_dir, "spm.model"), os.path.join(data_dir, "cmvn.json"))
    assert open(spm, "rb").read() == b"spm" and open(cmvn).read() == '{"mean": [], "std": []}'
    assert (c.paths.manifest_dir, c.paths.train_manifest) == (data_dir, os.path.join(data_dir, "train.tsv"))
    assert open(os.path.join(data_dir, "test.tsv")).read() == "test.tsv of data\n"  # the given manifests
    again, _ = ovp.pretrained_inputs(base, demo, bundle, out)  # a rerun: the same config (cached runs)
    assert ovp.config_digest(again) == ovp.config_digest(c)
    other = _data_dir(tmp_path / "other", b"other", "{}")
    with pytest.raises(ValueError, match=rf"manifests of {demo} .*--data_dir={other}.*another --out"):
        ovp.pretrained_inputs(base, other, bundle, out)
    mine = experiment.get_config("tiny,demo")
    mine.paths.spm_model = os.path.join(demo, "spm.model")  # explicitly the demo's: refused, not replaced
    with pytest.raises(ValueError, match=rf"{demo}/spm\.model differs from the bundle's {bundle}/spm\.model"
                                         r".*drop --config\.paths\.spm_model"):
        ovp.pretrained_inputs(mine, demo, bundle, str(tmp_path / "cmp2"))


def test_run_config_keeps_an_explicit_train_levels_and_refuses_one_without_a_tier():
    base = experiment.get_config("tiny,demo")
    base.sparsity.train_levels = (0.6, 0.75, 0.9)
    keep = ("sparsity.train_levels",)  # --config.sparsity.train_levels=... on the command line
    kept = ovp.run_config(base, "omni", 800, {"phone": 0.75}, None, True, keep)
    assert kept.sparsity.train_levels == (0.6, 0.75, 0.9)
    assert ovp.run_config(base, "omni", 800, {"phone": 0.75}, None, True).sparsity.train_levels == (0.75,)
    pruned = ovp.run_config(base, "pruned", 800, {"phone": 0.75}, 0.75, True, keep)  # unread: as without
    assert ovp.config_digest(pruned) == ovp.config_digest(
        ovp.run_config(base, "pruned", 800, {"phone": 0.75}, 0.75, True))
    tiers = ovp.with_omni_variant(base, {"sampler": "tiers"})
    tiers.sparsity.train_levels = (0.6, 0.9)
    with pytest.raises(ValueError, match=r"--config.sparsity.train_levels=\(0.6, 0.9\) lacks the level of "
                                         r"tier phone=0.75"):
        ovp.run_config(tiers, "omni", 800, {"phone": 0.75, "watch": 0.9}, None, True, keep)
    assert ovp.run_config(tiers, "omni", 800, {"watch": 0.9}, None, True, keep).sparsity.train_levels == \
        (0.6, 0.9)


def test_compare_refuses_a_variant_whose_train_levels_lack_a_tier_before_training(monkeypatch, tmp_path):
    def train_run(*args):
        raise AssertionError("trained before the variants were checked")

    monkeypatch.setattr(ovp, "train_run", train_run)
    monkeypatch.setattr(ovp, "test_batches", lambda *a: ([], None))
    base = experiment.get_config("tiny,demo")  # sampler uniform: the base variant is fine
    base.sparsity.train_levels = (0.9,)
    variants = ovp.parse_omni_variants(["base", "tiers"], base.sparsity)
    with pytest.raises(ValueError, match="train_levels.*lacks the level of tier big=0.5"):
        ovp.compare(base, str(tmp_path), "test.tsv", {"big": 0.5, "small": 0.9}, [4], ["steps"],
                    variants=variants, keep=("sparsity.train_levels",))
