"""Tests for omni_tf.sparsity.levels: validation, exact keep counts, nesting, blocks, numpy reference."""
import numpy as np
import pytest
import tensorflow as tf

import omni_tf  # noqa: F401
from omni_tf.sparsity import levels as lv

LEVELS = lv.DEFAULT_LEVELS


def _reference_survival(kernel: np.ndarray, sparsities, block: int) -> np.ndarray:
    """Slow numpy reference: rank unit norms (stable, descending), count the levels each unit survives."""
    in_dim, out_dim = kernel.shape
    nb = -(-in_dim // block)
    padded = np.zeros((nb * block, out_dim), np.float64)
    padded[:in_dim] = kernel
    scores = np.sqrt((padded.reshape(nb, block, out_dim) ** 2).sum(axis=1)).reshape(-1)
    order = sorted(range(scores.size), key=lambda i: (-scores[i], i))
    sizes = np.repeat([block] * (nb - 1) + [in_dim - block * (nb - 1)], out_dim)
    surv = np.full(scores.size, -1)
    for k, s in enumerate(sparsities):
        before = 0
        for i in order:  # keep a unit iff its midpoint (in weights) is within the target
            if before + sizes[i] / 2 <= in_dim * out_dim * (1 - s) + 1e-9:
                surv[i] = k
            before += sizes[i]
    surv = surv.reshape(nb, out_dim)
    return np.repeat(surv, block, axis=0)[:in_dim]


def test_validate_levels_accepts_default_and_rejects_bad():
    assert lv.validate_levels(LEVELS) == LEVELS
    for bad in [(), (0.0, 1.0), (-0.1, 0.5), (0.0, 0.5, 0.5), (0.5, 0.3)]:
        with pytest.raises(ValueError):
            lv.validate_levels(bad)


def test_parse_block_and_level_index():
    assert lv.parse_block("1x4") == 4
    assert lv.parse_block(16) == 16
    assert lv.parse_block("1x1") == 1
    for bad in ["4x4", "0", "abc", 0]:
        with pytest.raises(ValueError):
            lv.parse_block(bad)
    assert lv.level_index(LEVELS, 0.7) == 4
    with pytest.raises(ValueError, match="not one of the levels"):
        lv.level_index(LEVELS, 0.75)


@pytest.mark.parametrize("block", [1, 4, 16])
@pytest.mark.parametrize("shape", [(32, 24), (37, 10), (5, 3)])
def test_survival_matches_numpy_reference(block, shape):
    rng = np.random.default_rng(block * 100 + shape[0])
    kernel = rng.standard_t(df=2, size=shape).astype(np.float32)
    got = lv.survival_levels(kernel, LEVELS, block).numpy()
    np.testing.assert_array_equal(got, lv.survival_levels(kernel, LEVELS, f"1x{block}").numpy())
    assert got.dtype == np.int8 and got.shape == shape
    np.testing.assert_array_equal(got, _reference_survival(kernel, LEVELS, block))


@pytest.mark.parametrize("block", [1, 4, 16])
def test_exact_keep_counts_and_nesting(block):
    rng = np.random.default_rng(block)
    kernel = rng.normal(size=(64, 48)).astype(np.float32)
    surv = lv.survival_levels(kernel, LEVELS, block).numpy()
    n_units = lv.num_units(kernel.shape, block)
    keep = lv.keep_counts(n_units, LEVELS)
    prev = np.ones_like(surv, bool)
    for k in range(len(LEVELS)):
        mask = surv >= k
        assert mask.sum() == keep[k] * block  # 64 % block == 0: whole blocks only
        assert np.all(mask <= prev)  # nested
        prev = mask
        if block > 1:  # a unit is all-in or all-out
            blocks = mask.reshape(64 // block, block, 48)
            assert np.all(blocks.all(axis=1) == blocks.any(axis=1))


def test_ties_are_deterministic_and_counts_exact():
    kernel = np.ones((10, 10), np.float32)  # all tied
    surv = lv.survival_levels(kernel, LEVELS, 1).numpy()
    for k, s in enumerate(LEVELS):
        assert (surv >= k).sum() == round(100 * (1 - s))
    # lower flat index wins ties: first row is kept at the sparsest level
    assert np.all(surv.reshape(-1)[:10] == len(LEVELS) - 1)
    np.testing.assert_array_equal(surv, lv.survival_levels(kernel, LEVELS, 1).numpy())


def test_partial_last_block_within_half_a_block():
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(10, 7)).astype(np.float32)  # blocks of 4: 4, 4, 2
    kernel[8:] *= 10.0  # make the partial blocks the strongest units
    surv = lv.survival_levels(kernel, LEVELS, 4).numpy()
    for k, s in enumerate(LEVELS):
        assert abs((surv >= k).sum() - 70 * (1 - s)) <= 2.0 + 1e-9
    np.testing.assert_array_equal(surv[8], surv[9])  # the partial block moves as one
    assert np.all(surv[8] >= 4)  # 14 weights ranked first, within the 21 kept at s=0.7


def test_current_ramping_targets_and_nonzero_first_level():
    kernel = np.random.default_rng(0).normal(size=(20, 20)).astype(np.float32)
    assert np.all(lv.survival_levels(kernel, np.zeros(7), 1).numpy() == 6)  # before the ramp: all dense
    half = [s * 0.5 for s in LEVELS]
    surv = lv.survival_levels(kernel, half, 1).numpy()
    assert (surv >= 6).sum() == round(400 * (1 - 0.45))
    surv = lv.survival_levels(kernel, (0.2, 0.5), 1).numpy()  # s_0 > 0: some weights never survive
    assert (surv == -1).sum() == 80 and (surv >= 1).sum() == 200


def test_survival_in_tf_function_with_tensor_sparsities():
    kernel = tf.constant(np.random.default_rng(1).normal(size=(16, 8)), tf.float32)
    fn = tf.function(lambda s: lv.survival_levels(kernel, s, 4))
    s = tf.constant(LEVELS, tf.float32)
    np.testing.assert_array_equal(fn(s).numpy(), lv.survival_levels(kernel, LEVELS, 4).numpy())


def test_config_vector_round_trip_and_errors():
    names = ["a", "b", "c"]
    vec = lv.config_to_vector({"a": 1, "b": 0, "c": 6}, names, 7)
    assert vec.dtype == np.int32 and list(vec) == [1, 0, 6]
    assert lv.vector_to_config(vec, names) == {"a": 1, "b": 0, "c": 6}
    with pytest.raises(ValueError, match="missing"):
        lv.config_to_vector({"a": 1}, names, 7)
    with pytest.raises(ValueError, match="out of range"):
        lv.config_to_vector({"a": 1, "b": 0, "c": 7}, names, 7)
    with pytest.raises(ValueError):
        lv.unit_scores(np.zeros((3,), np.float32), 1)


def test_half_unit_rounding_same_for_float32_and_float64():
    kernel = np.arange(1, 16, dtype=np.float32).reshape(5, 3)  # 15 units: 15 * 0.1 = 1.5 -> 2 kept
    s64 = lv.survival_levels(kernel, np.array([0.0, 0.9], np.float64), 1).numpy()
    s32 = lv.survival_levels(kernel, tf.constant([0.0, 0.9], tf.float32), 1).numpy()
    np.testing.assert_array_equal(s64, s32)
    assert (s32 >= 1).sum() == lv.keep_counts(15, [0.0, 0.9])[1] == 2
