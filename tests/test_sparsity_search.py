"""Tests for omni_tf.sparsity.search on synthetic fitness functions with known optima."""
import itertools

import numpy as np
import pytest

from omni_tf.sparsity import levels as lv
from omni_tf.sparsity import search
from omni_tf.sparsity.size import SizeModel

LEVELS = lv.DEFAULT_LEVELS


def _model(n=8, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(int(rng.choice([64, 128, 256])), int(rng.choice([64, 128, 256]))) for _ in range(n)]
    return SizeModel([f"k{i}" for i in range(n)], shapes, other_params=500, levels=LEVELS, block=4)


def _sensitivity_fitness(sensitivity):
    """Loss grows with the sparsity of each kernel, steeply for the sensitive ones."""
    def fitness(config):
        return float(sum(sensitivity[int(name[1:])] * LEVELS[level] ** 2 for name, level in config.items()))
    return fitness


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fraction", [0.4, 0.6])  # 1x4 int8: sparse pays off below ~50% density
def test_search_beats_uniform_within_budget(seed, fraction):
    sm = _model(seed=seed)
    sensitivity = np.ones(8)
    sensitivity[[1, 5]] = 20.0  # two sensitive kernels
    budget = fraction * sm.dense_int8_bytes()
    result = search.evolutionary_search(_sensitivity_fitness(sensitivity), sm, budget, population=16,
                                        generations=12, seed=seed)
    assert result.size <= budget and sm.measure(result.config, "int8_sparse_bytes") == result.size
    assert result.uniform_size <= budget
    assert result.fitness < result.uniform_fitness
    assert result.config["k1"] <= np.median(list(result.config.values()))  # sensitive stays denser
    assert result.history == sorted(result.history, reverse=True)  # elitism: never worse
    assert set(result.to_dict()) >= {"config", "fitness", "uniform_config", "uniform_fitness"}


def test_search_finds_brute_force_optimum():
    levels = (0.0, 0.5, 0.7, 0.9)
    sm = SizeModel(["k0", "k1", "k2", "k3"], [(64, 64), (128, 64), (64, 256), (128, 128)], other_params=0,
                   levels=levels, block=1)
    sens = [5.0, 1.0, 0.5, 2.0]

    def fitness(config):
        return sum(sens[int(n[1:])] * levels[v] ** 2 for n, v in config.items())

    budget = 0.35 * sm.report([0, 0, 0, 0])["total_params"]
    best = min((v for v in itertools.product(range(4), repeat=4)
                if sm.measure(list(v), "nonzero_params") <= budget),
               key=lambda v: fitness(lv.vector_to_config(v, sm.names)))
    result = search.evolutionary_search(fitness, sm, budget, metric="nonzero_params", population=12,
                                        generations=10, seed=0)
    assert result.fitness == pytest.approx(fitness(lv.vector_to_config(best, sm.names)))
    assert result.evaluations < 4 ** 4  # did not enumerate


def test_search_is_reproducible_and_maximize():
    sm = _model(seed=3)
    fit = _sensitivity_fitness(np.linspace(1, 5, 8))
    budget = 0.4 * sm.dense_int8_bytes()
    a = search.evolutionary_search(fit, sm, budget, population=8, generations=4, seed=7)
    b = search.evolutionary_search(fit, sm, budget, population=8, generations=4, seed=7)
    assert a.config == b.config and a.history == b.history
    acc = search.evolutionary_search(lambda c: -fit(c), sm, budget, population=8, generations=4, seed=7,
                                     minimize=False)
    assert acc.fitness == pytest.approx(-a.fitness)


def test_budgets_and_errors():
    sm = _model()
    budgets = search.budgets_from_fractions(sm, {"low": 0.35, "mid": 0.5})
    assert budgets["mid"] == pytest.approx(0.5 * sm.dense_int8_bytes())
    results = search.search_budgets(lambda c: sum(c.values()) * -1.0, sm, budgets, population=6,
                                    generations=2, metric="int8_sparse_bytes")
    assert results["low"].size <= budgets["low"] and results["mid"].size <= budgets["mid"]
    with pytest.raises(ValueError, match="below the sparsest"):
        search.evolutionary_search(lambda c: 0.0, sm, 10.0)
    with pytest.raises(ValueError):
        search.evolutionary_search(lambda c: 0.0, sm, budgets["mid"], population=1)
    with pytest.raises(ValueError):
        search.budgets_from_fractions(sm, {"x": 0.0})


def test_masked_fitness_on_fake_model():
    import tensorflow as tf

    from omni_tf.sparsity.masking import SupernetMasks

    class Fake:
        def __init__(self):
            rng = np.random.default_rng(0)
            self.k = [(f"k{i}", tf.Variable(rng.normal(size=(32, 16)), dtype=tf.float32)) for i in range(3)]
            self.m = [(n, tf.Variable(tf.ones_like(v), trainable=False)) for n, v in self.k]
            self.weights = [v for _, v in self.k + self.m]

        def prunable_kernels(self):
            return self.k

        def kernel_masks(self):
            return self.m

    model = Fake()
    masks = SupernetMasks(model, LEVELS, 4)
    masks.update_rankings()
    x = tf.constant(np.random.default_rng(1).normal(size=(8, 32)), tf.float32)
    target = [x @ k for _, k in model.k]

    def evaluate():  # output error of the masked layers vs dense; k0 gets a 10x weight
        errs = [tf.reduce_mean((x @ (k * m) - t) ** 2) for (_, k), (_, m), t in zip(model.k, model.m, target,
                                                                                    strict=True)]
        return float(10 * errs[0] + errs[1] + errs[2])

    sm = SizeModel.from_model(model, masks=masks)
    budget = sm.measure([4, 4, 4], "nonzero_params")
    result = search.evolutionary_search(search.masked_fitness(masks, evaluate), sm, budget,
                                        metric="nonzero_params", population=8, generations=5, seed=0)
    assert result.size <= budget and result.fitness < result.uniform_fitness
    assert result.config["k0"] < 4  # the heavily weighted kernel is kept denser than uniform


def test_choose_config_keeps_the_searched_config_only_when_better_on_dev():
    better = search.choose_config((-0.03, -0.05, -0.01))
    assert better[0] == search.SEARCHED and "better on dev" in better[1]
    assert search.choose_config((-0.01, -0.03, 0.01)) == (
        search.UNIFORM, "dev WER searched - uniform -1.0 points [-3.0, +1.0]: not better on dev (interval "
        "contains 0)")
    worse = search.choose_config((0.02, 0.01, 0.04))
    assert worse[0] == search.UNIFORM and "worse on dev" in worse[1]
    assert search.choose_config((0.0, 0.0, 0.0), same_config=True)[0] == search.UNIFORM
    assert search.choose_config((-0.03, -0.05, -0.01), same_config=True)[0] == search.UNIFORM
    with pytest.raises(ValueError, match="lo <= diff <= hi"):
        search.choose_config((0.1, 0.0, 0.05))
