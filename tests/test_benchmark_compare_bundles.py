"""benchmarks/compare_runs.py with shipped dense bundles as sides: two identical bundles (level 0 only by
default, diff 0, tie), a bundle against a run (and at a level > 0: uniform masks on the dense weights), the
cache keys, the --data_dir rules and a missing split manifest."""
import json
import os
import shutil

import pytest
from absl import app

import omni_tf  # noqa: F401
from benchmarks import compare_runs as cr
from benchmarks import decodes
from omni_tf.training import pretrained
from recipes import end_to_end as e2e
from tests.training_helpers import make_bundle, tiny_config, train_smoke_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run_demo-like output dir: ``train/omni`` trained 1 step, its prepared data in ``data``."""
    return train_smoke_run(str(tmp_path_factory.mktemp("run")))


@pytest.fixture(scope="module")
def bundles(run_dir, tmp_path_factory):
    """Two byte-identical bundles of the run's model config (weights 0.125 + noise) shipping the run's
    spm.model / cmvn.json, in folders ``one/bundle`` and ``two``."""
    root = tmp_path_factory.mktemp("bundles")
    data = os.path.join(run_dir, "data")
    config = cr.load_run("A", run_dir).config
    one = make_bundle(root / "one", config, os.path.join(data, "spm.model"), os.path.join(data, "cmvn.json"),
                      {"name": "tiny_one", "steps": [6, 4]})
    two = str(root / "two")
    shutil.copytree(one, two)
    return one, two


def test_identical_bundles_give_level_0_only_a_zero_difference_and_tie(run_dir, bundles, tmp_path):
    data = os.path.join(run_dir, "data")
    a, b = cr.load_sides(*bundles, data)
    assert a.bundle["name"] == "tiny_one" and a.config.model.to_dict() == pretrained.model_config(
        bundles[0]).to_dict()
    assert a.config.paths.spm_model == os.path.join(bundles[0], "spm.model")  # each side its own files
    assert a.config.paths.manifest_dir == data and a.config.training.init_from == bundles[0]
    out = str(tmp_path / "cmp")
    rows = cr.compare(a, b, None, out, bootstrap=50)
    assert [r["level"] for r in rows] == ["0"]  # a dense bundle: level 0 only by default
    assert (rows[0]["diff"], rows[0]["diff_lo"], rows[0]["diff_hi"], rows[0]["verdict"]) == (0, 0, 0, "tie")
    assert rows[0]["wer_a"] == rows[0]["wer_b"] and rows[0]["utterances"] > 0
    keys = sorted(json.load(open(os.path.join(out, "decodes.json")))["evals"])
    assert len(keys) == 2 and all(k.startswith("bundle:") for k in keys)  # one per bundle folder
    text = cr.report(rows, a, b, out, {"split": "test", "manifest": "test.tsv", "bootstrap": 50, "seed": 0,
                                       "command": "compare_runs"})
    assert text.startswith("# bundle tiny_one (6+4 steps) (A) vs bundle tiny_one (6+4 steps) (B)")
    assert "| 0 |" in text and "| tie |" in text
    assert json.load(open(os.path.join(out, "compare.json")))["a"]["bundle"] == "tiny_one"


def test_a_bundle_against_a_run_at_levels_0_and_05(run_dir, tmp_path):
    run = cr.load_run("B", run_dir)
    supernet = e2e.restore(run.config, run.workdir)  # the run's weights, shipped as a bundle
    spm_model, cmvn = (os.path.join(run_dir, "data", n) for n in ("spm.model", "cmvn.json"))
    folder = pretrained.write_bundle(supernet.model, run.config, spm_model, cmvn, str(tmp_path / "shipped"),
                                     {"name": "from_run", "total_steps": 1})
    a, b = cr.load_sides(folder, run_dir, os.path.join(run_dir, "data"))
    assert a.bundle is not None and b.bundle is None
    out = str(tmp_path / "cmp")
    assert [r["level"] for r in cr.compare(a, b, None, out, bootstrap=20)] == ["0"]  # the level both have
    a5, _ = cr.load_sides(folder, run_dir, os.path.join(run_dir, "data"), [0, 0.5])
    assert a5.config.training.mode == "omni" and cr.run_levels(a5.config) == (0.0, 0.5)
    masked = decodes.bundle_supernet(a5.config, folder)  # ranked by the bundle's weights, not at random
    masked.masks.apply_uniform(1)
    assert sorted(masked.masks.sparsity_report().values())[len(masked.masks.names) // 2] == pytest.approx(
        0.5, abs=0.05)
    rows = cr.compare(a5, b, [0, 0.5], out, bootstrap=20)
    assert [r["level"] for r in rows] == ["0", "0.5"] and rows[1]["utterances"] > 0
    keys = json.load(open(os.path.join(out, "decodes.json")))["evals"]
    assert sum(k.startswith(f"{b.workdir}@1|") for k in keys) == 2  # the run: 0 and 0.5
    assert sum(k.startswith(f"bundle:{folder}@") for k in keys) == 2  # 0 (decoded once: a5's is cached), 0.5
    assert not any(k.startswith(folder) for k in keys)  # never a run's key
    assert cr.default_out(a, b, "test_ood") == "runs/compare/from_run_vs_run0/test_ood"  # not in the bundle
    assert cr.default_out(b, a, "test") == os.path.join(run_dir, "compare")
    text = cr.report(rows, a5, b, out, {"split": "test", "manifest": "m", "bootstrap": 20, "seed": 0,
                                        "command": "c"})
    assert text.startswith(f"# bundle from_run (1 steps) (A) vs {run_dir} (B)")


def test_bundle_data_dir_rules_and_a_missing_split_manifest(run_dir, bundles, tmp_path):
    one, two = bundles
    with pytest.raises(app.UsageError, match="give --data_dir"):
        cr.load_sides(one, run_dir, "")
    with pytest.raises(app.UsageError, match="--data_dir=.* is for a bundle side only"):
        cr.load_sides(run_dir, run_dir, os.path.join(run_dir, "data"))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        cr.load_sides(one, two, str(tmp_path / "nowhere"))
    assert cr.is_bundle("demo_tiny") and cr.is_bundle(one) and not cr.is_bundle(run_dir)  # shipped by name
    a, b = cr.load_sides(one, two, os.path.join(run_dir, "data"))
    ood = os.path.join(run_dir, "data", "test_ood.tsv")
    with pytest.raises(FileNotFoundError, match=f"manifest not found: '{ood}'"):
        cr.compare(a, b, None, str(tmp_path / "cmp"), split="test_ood")


def test_bundles_with_other_cmvn_bytes_need_allow_different_data(run_dir, bundles, tmp_path):
    one, _ = bundles
    other = str(tmp_path / "other")
    shutil.copytree(one, other)
    with open(os.path.join(other, "cmvn.json"), "a") as f:
        f.write("\n")  # other bytes, the same statistics
    a, b = cr.load_sides(one, other, os.path.join(run_dir, "data"))
    with pytest.raises(ValueError, match=f"cmvn.json {one}/cmvn.json \\(A\\) and {other}/cmvn.json \\(B\\) "
                                         "differ.*--allow_different_data"):
        cr.compare(a, b, [0], str(tmp_path / "cmp"))


def test_flags_take_data_dir_and_the_ood_split():
    from absl import flags

    fv = flags.FlagValues()
    cr.define_flags(fv)
    fv(["compare_runs", "--a=x", "--b=demo_tiny", "--data_dir=d", "--split=test_ood"])
    assert (fv.data_dir, fv.split) == ("d", "test_ood")


@pytest.mark.parametrize("levels, mode", [((), "dense"), ((0.5,), "omni")])
def test_a_bundle_trained_with_tier_weights_is_decoded_at_the_levels_asked(tmp_path, levels, mode):
    """``bundle_config`` empties the bundle's ``train_levels`` (it is decoded at the levels asked, not its
    tiers), and so its ``tier_weights`` (one per entry), and sets a sampler that needs no entries: the
    supernet builds (was: ValueError "sparsity.tier_weights=(1.0, 1.0, 2.0) has 3 weights, but
    sparsity.train_levels=() has 0 tiers")."""
    config = tiny_config("dense")
    config.sparsity.sampler, config.sparsity.tier_weights = "tiers", (1.0, 1.0, 2.0)
    bundle = make_bundle(tmp_path, config)
    c = cr.bundle_config(bundle, str(tmp_path / "data"), levels)
    assert (c.training.mode, c.sparsity.levels) == (mode, (0.0, *levels))
    assert (c.sparsity.train_levels, c.sparsity.tier_weights) == ((), ())
    assert c.sparsity.sampler == cr.DECODE_SAMPLER
    net = decodes.bundle_supernet(c, bundle)
    assert (net.sampler is None) == (mode == "dense")
