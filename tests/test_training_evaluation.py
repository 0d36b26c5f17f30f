"""evaluate_levels / search_tiers on a tiny supernet (real model, masks, decoding, size, search)."""
import json
import os

import numpy as np
import pytest

import omni_tf  # noqa: F401
from omni_tf.supernet import Supernet
from omni_tf.training import evaluation, sources
from tests.training_helpers import tiny_config


class DigitTokenizer:
    def decode(self, ids):
        return " ".join(str(i) for i in ids)


@pytest.fixture(scope="module")
def supernet():
    config = tiny_config("omni")
    config.sparsity.search_population, config.sparsity.search_generations = 4, 1
    net = Supernet(config)
    net.masks.update_rankings()
    src = sources.RandomFeatureSource(16, num_batches=2, batch_size=2)
    return net, evaluation.load_batches(src.dataset(0))


def test_evaluate_levels_rows_and_files(supernet, tmp_path):
    net, batches = supernet
    cfg = {n: 1 for n in net.masks.names}
    rows = evaluation.evaluate_levels(net, batches, DigitTokenizer(), {"mine": cfg}, out_dir=str(tmp_path))
    assert [r["name"] for r in rows] == ["uniform_0.00", "uniform_0.50", "uniform_0.80", "mine"]
    assert all(r["utterances"] == 4 and r["wer"] >= 0 and r["cer"] >= 0 for r in rows)
    assert rows[0]["nonzero_params"] > rows[1]["nonzero_params"] > rows[2]["nonzero_params"]
    assert rows[3]["nonzero_params"] == rows[1]["nonzero_params"]  # "mine" is uniform level 1
    assert json.load(open(tmp_path / "eval_dev.json"))[3]["name"] == "mine"
    md = open(tmp_path / "eval_dev.md").read().splitlines()
    assert md[0].startswith("| name | wer | cer") and len(md) == 6


def test_loss_evaluator_depends_on_masks(supernet):
    net, batches = supernet
    masks = net.masks
    ev = evaluation.LossEvaluator(net.model, batches)
    masks.apply_uniform(0)
    dense = ev()
    masks.apply_uniform(2)
    sparse = ev()
    masks.apply_uniform(0)
    assert np.isfinite(dense) and np.isfinite(sparse) and dense != sparse
    assert ev() == pytest.approx(dense, rel=1e-6)


def test_search_tiers_meets_budgets(supernet, tmp_path):
    net, batches = supernet
    sizes = net.size_model()
    budget = sizes.measure(sizes.uniform_config(1), "nonzero_params")
    out = evaluation.search_tiers(net, batches, {"mid": budget}, "nonzero_params", out_dir=str(tmp_path))
    r = out["mid"]
    assert r["size"] <= budget and r["uniform_size"] <= budget and r["fitness_kind"] == "loss"
    assert set(json.load(open(tmp_path / "tier_mid.json"))) == set(net.masks.names)
    assert r["evaluations"] <= 4 * 2  # population x (generations + 1): config.sparsity.search_*
    assert os.path.exists(tmp_path / "search.md")
    with pytest.raises(ValueError, match="fitness"):
        evaluation.search_tiers(net, batches, {"x": budget}, "nonzero_params", fitness="bleu")


def test_choose_tiers_falls_back_to_uniform_unless_searched_is_better(supernet, tmp_path):
    from omni_tf.sparsity import search

    net, batches = supernet
    masks = net.masks
    dense, sparse = ({n: k for n in masks.names} for k in (0, masks.num_levels - 1))
    found = {"same": {"config": sparse, "uniform_config": sparse},
             "two": {"config": dense, "uniform_config": sparse}}
    out = evaluation.choose_tiers(net, batches, DigitTokenizer(), found, str(tmp_path), resamples=50)
    same = out["same"]
    assert same["choice"] == search.UNIFORM and same["config"] == sparse
    assert same["diff"] == same["lo"] == same["hi"] == 0.0 and same["searched_wer"] == same["uniform_wer"]
    two = out["two"]
    assert (two["choice"] == search.SEARCHED) == (two["hi"] < 0)  # the rule, on this model's dev WERs
    assert two["config"] == (dense if two["choice"] == search.SEARCHED else sparse)
    assert two["diff"] == pytest.approx(two["searched_wer"] - two["uniform_wer"])
    assert two["utterances"] == sum(len(b["ids"]) for b in batches)
    assert json.load(open(tmp_path / "choice.json"))["two"]["choice"] == two["choice"]
