"""Tests for omni_tf.sparsity.schedule.LevelSchedule."""
import inspect

import numpy as np
import pytest
import tensorflow as tf

from omni_tf.sparsity import levels as lv
from omni_tf.sparsity.schedule import LevelSchedule


def test_ramp_matches_cubic_formula():
    sched = LevelSchedule(lv.DEFAULT_LEVELS, begin_step=100, end_step=500, frequency=50, power=3)
    final = np.array(lv.DEFAULT_LEVELS)
    np.testing.assert_allclose(sched.sparsities(0).numpy(), 0.0)
    np.testing.assert_allclose(sched.sparsities(100).numpy(), 0.0)
    for t in [150, 300, 499]:
        p = (t - 100) / 400
        np.testing.assert_allclose(sched.sparsities(t).numpy(), final * (1 - (1 - p) ** 3), atol=1e-6)
    np.testing.assert_allclose(sched.sparsities(500).numpy(), final, atol=1e-6)
    np.testing.assert_allclose(sched.sparsities(10_000).numpy(), final, atol=1e-6)
    # ordered at every step: valid ranking targets
    for t in range(100, 501, 37):
        assert np.all(np.diff(sched.sparsities(t).numpy()) >= 0)


def test_update_cadence_window_and_end_step():
    sched = LevelSchedule(lv.DEFAULT_LEVELS, begin_step=10, end_step=45, frequency=10)
    updates = [t for t in range(0, 80) if bool(sched.should_update(t))]
    assert updates == [10, 20, 30, 40, 45]  # 45: the final targets even off the grid
    update_now, s = sched(45)
    assert bool(update_now) and s.shape == (7,)
    assert not bool(sched.is_frozen(44)) and bool(sched.is_frozen(45))


def test_ranking_targets_follow_the_last_ranking_point():
    """Driven by a schedule step that can jump (a time budget), no ranking point is lost for good."""
    sched = LevelSchedule(lv.DEFAULT_LEVELS, begin_step=10, end_step=45, frequency=10)
    assert [sched.ranking_step(t) for t in (0, 9, 10, 19, 20, 44, 45, 90)] == [-1, -1, 10, 10, 20, 40, 45, 45]
    np.testing.assert_allclose(sched.ranking_targets(5).numpy(), 0.0)
    np.testing.assert_allclose(sched.ranking_targets(27).numpy(), sched.sparsities(20).numpy())
    np.testing.assert_allclose(sched.ranking_targets(60).numpy(), lv.DEFAULT_LEVELS, atol=1e-6)
    # The on-grid steps of a step-driven run re-rank exactly where tfmot's cadence does.
    changes, last = [], np.zeros(7, np.float32)
    for t in range(80):
        targets = sched.ranking_targets(t).numpy()
        if not np.array_equal(targets, last):
            changes.append(t)
            last = targets
    assert changes == [20, 30, 40, 45]  # 10 ranks at all-zero targets: the initial (dense) state


def test_dense_warmup():
    sched = LevelSchedule(lv.DEFAULT_LEVELS, begin_step=10, end_step=20, frequency=1)
    assert bool(sched.in_warmup(9)) and not bool(sched.in_warmup(10))
    no_warm = LevelSchedule(lv.DEFAULT_LEVELS, begin_step=10, end_step=20, frequency=1, dense_warmup=False)
    assert not bool(no_warm.in_warmup(0))


def test_tensor_step_in_tf_function():
    sched = LevelSchedule(lv.DEFAULT_LEVELS, begin_step=0, end_step=100, frequency=10, power=2)
    fn = tf.function(lambda step: sched(step))
    for t in [0, 5, 10, 100]:
        update, s = fn(tf.constant(t, tf.int64))
        assert bool(update) == (t % 10 == 0)
        np.testing.assert_allclose(s.numpy(), sched.sparsities(t).numpy(), atol=1e-7)
    assert fn.experimental_get_tracing_count() == 1


def test_config_round_trip_and_keys_match_init():
    sched = LevelSchedule((0.0, 0.5, 0.9), begin_step=3, end_step=30, frequency=4, power=2.0,
                          dense_warmup=False)
    config = sched.get_config()
    assert set(config) == set(inspect.signature(LevelSchedule.__init__).parameters) - {"self"}
    again = LevelSchedule.from_config(config)
    assert again.get_config() == config
    np.testing.assert_allclose(again.sparsities(17).numpy(), sched.sparsities(17).numpy())


@pytest.mark.parametrize("kwargs", [
    dict(begin_step=-1, end_step=10), dict(begin_step=10, end_step=10), dict(frequency=0),
    dict(power=0), dict(levels=(0.5, 0.3)),
])
def test_invalid_arguments(kwargs):
    args = dict(levels=lv.DEFAULT_LEVELS, begin_step=0, end_step=10, frequency=1)
    args.update(kwargs)
    with pytest.raises(ValueError):
        LevelSchedule(**args)
