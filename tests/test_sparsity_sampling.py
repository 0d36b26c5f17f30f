"""Tests for omni_tf.sparsity.sampling: shapes, ranges, (seed, step) determinism, distillation."""
import numpy as np
import pytest
import tensorflow as tf

from omni_tf.sparsity import sampling

N, K = 12, 7


def test_sandwich_rows():
    s = sampling.make_sampler("sandwich", N, K, seed=3, subnets_per_step=2)
    out = s(5).numpy()
    assert out.shape == (4, N) == (s.num_subnets, N) and out.dtype == np.int32
    assert np.all(out[0] == 0) and np.all(out[1] == K - 1)
    assert np.all((out >= 0) & (out < K))
    uniform = sampling.make_sampler("sandwich", N, K, seed=3, subnets_per_step=3, random_kind="uniform")
    rows = uniform(8).numpy()[2:]
    assert np.all(rows == rows[:, :1])


def test_reproducible_from_seed_and_step():
    a = sampling.make_sampler("per_layer", N, K, seed=1, subnets_per_step=2)
    b = sampling.make_sampler("per_layer", N, K, seed=1, subnets_per_step=2)
    np.testing.assert_array_equal(a(100).numpy(), b(100).numpy())  # a "resumed" sampler replays
    assert not np.array_equal(a(100).numpy(), a(101).numpy())
    c = sampling.make_sampler("per_layer", N, K, seed=2, subnets_per_step=2)
    assert not np.array_equal(a(100).numpy(), c(100).numpy())


def test_per_layer_and_uniform_cover_all_levels():
    per_layer = sampling.make_sampler("per_layer", N, K, seed=0)
    draws = np.concatenate([per_layer(t).numpy() for t in range(60)])
    assert draws.shape == (60, N)
    counts = np.bincount(draws.ravel(), minlength=K)
    assert len(counts) == K and counts.min() > 0.5 * draws.size / K  # roughly uniform
    assert np.mean([len(set(r)) > 1 for r in draws]) > 0.9  # kernels draw independently
    uniform = sampling.make_sampler("uniform", N, K, seed=0, subnets_per_step=3)
    rows = np.concatenate([uniform(t).numpy() for t in range(40)])
    assert np.all(rows == rows[:, :1])
    assert set(rows[:, 0]) == set(range(K))


def test_fixed_and_dense():
    fixed = sampling.make_sampler("fixed", N, K, target_level=4)
    np.testing.assert_array_equal(fixed(9).numpy(), np.full((1, N), 4))
    np.testing.assert_array_equal(sampling.make_sampler("dense", N, K)(0).numpy(), np.zeros((1, N)))
    with pytest.raises(ValueError):
        sampling.make_sampler("fixed", N, K, target_level=K)


def test_tensor_step_in_tf_function_no_retrace():
    s = sampling.make_sampler("sandwich", N, K, seed=7, subnets_per_step=1)
    fn = tf.function(lambda step: s(step))
    for t in range(3):
        np.testing.assert_array_equal(fn(tf.constant(t, tf.int64)).numpy(), s(t).numpy())
    assert fn.experimental_get_tracing_count() == 1


def test_distill_weights():
    levels = tf.constant([[0, 0, 0], [6, 6, 6], [0, 2, 0]])
    np.testing.assert_allclose(sampling.distill_weights(levels, 0.5).numpy(), [0.0, 0.5, 0.5])
    np.testing.assert_allclose(sampling.distill_weights(levels, 0.0).numpy(), [0.0, 0.0, 0.0])


def test_sampler_errors():
    with pytest.raises(ValueError, match="unknown sampler"):
        sampling.make_sampler("random", N, K)
    with pytest.raises(ValueError):
        sampling.make_sampler("uniform", N, K, subnets_per_step=0)


LEVELS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)


def test_tiers_sampler_trains_dense_and_every_tier_each_step():
    s = sampling.make_sampler("tiers", N, len(LEVELS), seed=4, levels=LEVELS, train_levels=(0.9, 0.6, 0.75))
    assert s.num_subnets == 4
    for step in (0, 1, 57):
        rows = s(step).numpy()
        assert rows.shape == (4, N)
        assert np.all(rows[0] == 0) and np.all(rows[1] == 3) and np.all(rows[3] == 6)  # dense, 0.6, 0.9
        assert set(np.unique(rows[2])) <= {4, 5}  # 0.75 lies between 0.7 (4) and 0.8 (5): per-kernel mix
    np.testing.assert_array_equal(s(9).numpy(), sampling.make_sampler(
        "tiers", N, len(LEVELS), seed=4, levels=LEVELS, train_levels=(0.6, 0.75, 0.9))(9).numpy())
    # The mix takes hi with probability (0.75 - 0.7) / (0.8 - 0.7) = 0.5: over many steps about half.
    wide = sampling.make_sampler("tiers", 400, len(LEVELS), seed=0, levels=LEVELS, train_levels=(0.75,))
    assert abs(float(np.mean(wide(3).numpy()[1] == 5)) - 0.5) < 0.1


def test_tiers_random_is_dense_sparsest_and_one_other_tier():
    s = sampling.make_sampler("tiers_random", N, len(LEVELS), seed=1, levels=LEVELS,
                              train_levels=(0.5, 0.6, 0.7, 0.9))
    assert s.num_subnets == 3
    seen = set()
    for step in range(40):
        idx = s.tier_indices(step).numpy()
        assert idx[0] == 3 and 0 <= idx[1] < 3  # sparsest tier, then one of the others
        rows = s(step).numpy()
        assert np.all(rows[0] == 0) and np.all(rows[1] == 6)
        assert np.all(rows[2] == LEVELS.index(s.train_levels[idx[1]]))
        seen.add(int(idx[1]))
        # a pure function of (seed, step): a fresh ("resumed") sampler replays
        twin = sampling.make_sampler("tiers_random", N, len(LEVELS), seed=1, levels=LEVELS,
                                     train_levels=(0.5, 0.6, 0.7, 0.9))
        np.testing.assert_array_equal(twin(step).numpy(), rows)
    assert seen == {0, 1, 2}
    one = sampling.make_sampler("tiers_random", N, len(LEVELS), levels=LEVELS, train_levels=(0.7,))
    assert one.num_subnets == 2 and np.all(one(0).numpy()[1] == 4)


def test_tiers_sampler_rejects_bad_train_levels():
    with pytest.raises(ValueError, match="train_levels"):
        sampling.make_sampler("tiers", N, len(LEVELS), levels=LEVELS, train_levels=())
    with pytest.raises(ValueError, match="outside the level range"):
        sampling.make_sampler("tiers", N, len(LEVELS), levels=LEVELS, train_levels=(0.95,))
    with pytest.raises(ValueError, match="level sparsities"):
        sampling.make_sampler("tiers", N, len(LEVELS), train_levels=(0.6,))


def test_supernet_sampler_reads_train_levels():
    from omni_tf.supernet import Supernet
    from tests.training_helpers import tiny_config

    c = tiny_config("omni")
    c.sparsity.sampler, c.sparsity.train_levels = "tiers", (0.5, 0.8)
    s = Supernet(c).sampler
    assert s.num_subnets == 1 + len(c.sparsity.train_levels)
