"""Tests for omni_tf.sparsity.size: hand-computed byte formulas, exact vs analytic counts, budgets."""
import numpy as np
import pytest
import tensorflow as tf

from omni_tf.sparsity import levels as lv
from omni_tf.sparsity import size
from omni_tf.sparsity.masking import SupernetMasks


class FakeModel:
    def __init__(self, shapes, other_shapes=((4,), (3, 5))):
        rng = np.random.default_rng(0)
        self.kernels = [(f"k{i}", tf.Variable(rng.normal(size=s), dtype=tf.float32))
                        for i, s in enumerate(shapes)]
        self.masks = [(n, tf.Variable(tf.ones_like(v), trainable=False)) for n, v in self.kernels]
        self.others = [tf.Variable(tf.zeros(s)) for s in other_shapes]
        self.weights = [v for _, v in self.kernels] + self.others + [m for _, m in self.masks]

    def prunable_kernels(self):
        return self.kernels

    def kernel_masks(self):
        return self.masks


def test_hand_computed_bytes():
    sm = size.SizeModel(["w"], [(8, 4)], other_params=10, levels=(0.0, 0.5), block=4)
    # level 1: 16 weights kept in 4 blocks of 4
    assert sm.measure([1], "nonzero_params") == 10 + 16
    assert sm.measure([0], "float32_bytes") == sm.measure([1], "float32_bytes") == 40 + 128
    assert sm.measure([1], "float32_sparse_bytes") == 40 + 4 * (4 * 4 + 4) + 5 * 4  # 100 < 128
    assert sm.measure([0], "float32_sparse_bytes") == 40 + 128  # sparse (180) is larger: stays dense
    assert sm.measure([0], "float16_bytes") == 20 + 64
    assert sm.measure([1], "float16_sparse_bytes") == 20 + 64  # sparse 4 * (8 + 4) + 20 = 68 > 64
    assert sm.measure([0], "int8_bytes") == 40 + 32 + 4 * 12
    assert sm.measure([1], "int8_sparse_bytes") == 40 + 32 + 4 * 12  # sparse 4*8+20+48=100 > 80
    assert sm.report({"w": 1})["total_params"] == 42
    assert sm.dense_int8_bytes() == 120


def test_float16_sparse_takes_min():
    sm = size.SizeModel(["w"], [(8, 4)], other_params=0, levels=(0.0, 0.5), block=4)
    assert sm.measure([1], "float16_sparse_bytes") == min(64, 4 * (8 + 4) + 20)


def test_sparse_wins_for_big_sparse_kernels():
    sm = size.SizeModel(["w"], [(256, 128)], other_params=0, levels=lv.DEFAULT_LEVELS, block=16)
    k9 = len(lv.DEFAULT_LEVELS) - 1
    nnzb = lv.keep_counts(16 * 128, [0.9])[0]
    assert sm.measure([k9], "int8_sparse_bytes") == nnzb * (16 + 4) + 129 * 4 + 128 * 12
    sizes = [sm.measure([k], "int8_sparse_bytes") for k in range(len(lv.DEFAULT_LEVELS))]
    assert all(a >= b for a, b in zip(sizes, sizes[1:], strict=False))


@pytest.mark.parametrize("block", [1, 4, 16])
def test_exact_counts_from_masks_match_masks(block):
    model = FakeModel([(32, 16), (37, 8)])
    masks = SupernetMasks(model, lv.DEFAULT_LEVELS, block)
    masks.update_rankings()
    other = size.count_other_params(model)
    assert other == 4 + 15
    exact = size.SizeModel.from_model(model, masks=masks)
    analytic = size.SizeModel.from_model(model, lv.DEFAULT_LEVELS, block)
    for k in range(len(lv.DEFAULT_LEVELS)):
        masks.apply_uniform(k)
        nnz = sum(int(m.numpy().sum()) for _, m in model.masks)
        assert exact.measure([k, k], "nonzero_params") == other + nnz
        assert abs(analytic.measure([k, k], "nonzero_params") - (other + nnz)) <= block  # b/2 per kernel
    np.testing.assert_array_equal(exact.nnz_blocks[0], analytic.nnz_blocks[0])  # 32 % block == 0


def test_measure_many_and_budget_helpers():
    sm = size.SizeModel(["a", "b", "c"], [(64, 64), (64, 256), (256, 64)], other_params=1000,
                        levels=lv.DEFAULT_LEVELS, block=4)
    vecs = np.random.default_rng(0).integers(0, 7, size=(20, 3))
    many = sm.measure_many(vecs, "int8_sparse_bytes")
    np.testing.assert_allclose(many, [sm.measure(v, "int8_sparse_bytes") for v in vecs])
    for k in range(7):
        budget = sm.measure(np.full(3, k), "int8_sparse_bytes")
        assert sm.uniform_level_for_budget(budget) <= k  # ties allowed with a denser level
        assert sm.uniform_level_for_budget(budget + 0.5) == sm.uniform_level_for_budget(budget)
    assert sm.uniform_level_for_budget(1e12) == 0
    with pytest.raises(ValueError, match="below the sparsest"):
        sm.uniform_level_for_budget(10.0)
    with pytest.raises(ValueError, match="unknown size metric"):
        sm.table("bytes")
    with pytest.raises(ValueError):
        sm.measure([0, 9, 0], "nonzero_params")
    assert sm.uniform_config(2) == {"a": 2, "b": 2, "c": 2}
