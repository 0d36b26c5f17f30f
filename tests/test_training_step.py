"""In-process tests of the train step and loop with the real model, loss, masks, schedule and sampler."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401
from omni_tf.losses.rnnt import rnnt_loss
from omni_tf.training import loop, optim, sources
from omni_tf.training.step import TrainStep
from tests.training_helpers import tiny_config


def _state_and_step(config, sgd: bool = False):
    strategy = loop.make_strategy(config.training)
    state = loop.TrainState(config, strategy)
    if sgd:  # Adam's first step ~ lr * sign(g) would amplify float noise in near-zero gradients
        with strategy.scope():
            state.optimizer = keras.optimizers.SGD(1.0)
            state.optimizer.build(state.model.trainable_variables)
    fn = TrainStep(state.model, state.optimizer, strategy, rnnt_loss, state.counters, state.masks,
                   clip_norm=config.training.clip_norm)
    return strategy, state, fn


def _dist(strategy, batch):
    ds = tf.data.Dataset.from_tensors({k: tf.constant(v) for k, v in batch.items()})
    return next(iter(strategy.experimental_distribute_dataset(ds)))


def test_nan_batch_is_skipped_counted_and_logged(monkeypatch):
    config = tiny_config("dense")
    strategy, state, fn = _state_and_step(config)
    src = sources.RandomFeatureSource(16, num_batches=2, nan_batch=1)
    before = [w.copy() for w in state.model.get_weights()]
    out = fn([_dist(strategy, src.batch(0, 1))], np.zeros([1, 1], np.int32))
    assert not bool(out["applied"])
    for a, b in zip(before, state.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # no NaN reached the weights, Adam moments untouched
    assert int(state.optimizer.iterations) == 0
    assert state.counters.as_dict()["skipped_nonfinite"] == 1 and int(state.counters.step) == 1
    warnings = []
    monkeypatch.setattr(loop.logging, "warning", lambda msg, *args: warnings.append(msg % args))
    loop._log_nonfinite(out, 1)
    assert "e0-b1-u0" in warnings[0] and "e0-b1-u3" in warnings[0]
    out = fn([_dist(strategy, src.batch(0, 0))], np.zeros([1, 1], np.int32))
    assert bool(out["applied"]) and int(state.optimizer.iterations) == 1
    assert all(np.isfinite(w).all() for w in state.model.get_weights())
    assert not all(np.array_equal(a, b) for a, b in zip(before, state.model.get_weights(), strict=True))


def test_two_micro_batches_equal_one_batch_of_both():
    config = tiny_config("omni")
    src = sources.RandomFeatureSource(16, batch_size=2)
    a, b = src.batch(0, 0), src.batch(0, 1)
    t = max(a["features"].shape[1], b["features"].shape[1])
    u = max(a["tokens"].shape[1], b["tokens"].shape[1])

    def pad(x, n, axis=1):
        width = [(0, 0)] * x.ndim
        width[axis] = (0, n - x.shape[axis])
        return np.pad(x, width)

    both = {"features": np.concatenate([pad(a["features"], t), pad(b["features"], t)]),
            "tokens": np.concatenate([pad(a["tokens"], u), pad(b["tokens"], u)]),
            **{k: np.concatenate([a[k], b[k]]) for k in ("feature_lengths", "token_lengths", "ids")}}
    init, results = None, []
    for micro in ([a, b], [both]):
        strategy, state, fn = _state_and_step(config, sgd=True)
        if init is None:
            init = [w.copy() for w in state.model.get_weights()]
        state.model.set_weights(init)
        state.masks.update_rankings(state.masks.levels)
        levels = np.array([[0], [2]]).repeat(state.masks.num_kernels, axis=1)  # 2 subnets, accumulated
        out = fn([_dist(strategy, x) for x in micro], levels)
        assert bool(out["applied"])
        results.append((out["subnet_loss"].numpy(), state.model.get_weights()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-4)
    assert results[0][0][1] != results[0][0][0]  # the sparse subnet really is another network
    for x, y in zip(results[0][1], results[1][1], strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-4)  # SGD(1): weights differ by the gradients
    assert any(not np.array_equal(x, w0) for x, w0 in zip(results[0][1], init, strict=True))


def test_pruned_mode_masks_reach_target_and_summaries(tmp_path):
    config = tiny_config("pruned")
    config.sparsity.target_sparsity = 0.6
    config.sparsity.begin_step, config.sparsity.end_step, config.sparsity.frequency = 0, 2, 1
    config.training.max_steps = 3
    workdir = str(tmp_path)
    metrics = loop.train(config, workdir, sources.RandomFeatureSource(16, num_batches=2))
    assert metrics["step"] == 3 and metrics["optimizer_iterations"] == 3
    assert json.load(open(os.path.join(workdir, "train_metrics.json")))["step"] == 3
    assert os.listdir(os.path.join(workdir, "tb"))
    strategy = loop.make_strategy(config.training)
    state = loop.TrainState(config, strategy)
    tf.train.Checkpoint(**state.trackables()).restore(metrics["checkpoint"]).expect_partial()
    report = state.masks.sparsity_report()  # the masks of the last (target-level) forward
    assert report and all(abs(s - 0.6) < 0.02 for s in report.values()), report


def test_wall_clock_budget_stops_with_a_checkpoint(tmp_path):
    config = tiny_config("omni")
    config.training.max_minutes = 1e-9
    metrics = loop.train(config, str(tmp_path), sources.RandomFeatureSource(16, num_batches=2))
    assert metrics["stopped_by"] == "max_minutes" and metrics["step"] == 0
    assert metrics["checkpoint"].endswith("ckpt-0") and os.path.exists(metrics["checkpoint"] + ".index")


def test_loss_scale_optimizer_skips_nonfinite_and_halves_its_scale():
    config = tiny_config("dense")
    strategy, state, _ = _state_and_step(config)
    with strategy.scope():
        opt = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.Adam(1e-3), initial_scale=8.0)
        opt.build(state.model.trainable_variables)
    fn = TrainStep(state.model, opt, strategy, rnnt_loss, state.counters, None, clip_norm=5.0)
    src = sources.RandomFeatureSource(16, num_batches=2, nan_batch=1)
    before = [w.copy() for w in state.model.get_weights()]
    out = fn([_dist(strategy, src.batch(0, 1))], np.zeros([1, 1], np.int32))
    assert not bool(out["applied"]) and float(opt.loss_scale) == 4.0
    for a, b in zip(before, state.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    out = fn([_dist(strategy, src.batch(0, 0))], np.zeros([1, 1], np.int32))
    assert bool(out["applied"]) and float(opt.loss_scale) == 4.0 and int(opt.dynamic_counter) == 1
    assert all(np.isfinite(w).all() for w in state.model.get_weights())
    assert state.counters.as_dict()["skipped_nonfinite"] == 1


class _FakeTime:
    """``time.monotonic`` advancing ``per_call`` seconds per call: the loop reads it once per step."""

    def __init__(self, per_call: float):
        self.now, self.per_call = 0.0, per_call

    def monotonic(self) -> float:
        self.now += self.per_call
        return self.now


def test_time_budget_ends_with_frozen_masks_and_decayed_rate_on_a_slow_or_fast_machine(tmp_path, monkeypatch):
    """max_steps 6, masks ramp over steps 1-4 and freeze at 4, budget 1 minute. A fast machine (5 s per step)
    runs out of steps first; a 3x slower one (20 s per step) runs out of time after 2 steps, and its schedules
    ran on the time progress: the masks froze at their final targets during training (no late ranking at
    stop) and the clock ends at the schedule's end, where the rate is at its floor."""
    warnings = []
    monkeypatch.setattr(loop.logging, "warning", lambda msg, *args: warnings.append(msg % args))
    for per_step, stopped_by, steps in ((5.0, "max_steps", 6), (20.0, "max_minutes", 2)):
        config = tiny_config("omni")
        config.training.max_minutes = 1.0
        monkeypatch.setattr(loop, "time", _FakeTime(per_step))
        workdir = str(tmp_path / f"run_{per_step:g}")
        metrics = loop.train(config, workdir, sources.RandomFeatureSource(16, num_batches=2))
        assert (metrics["stopped_by"], metrics["step"], metrics["schedule_step"]) == (stopped_by, steps, 6)
        assert not any("before the sparsity schedule ranked" in w for w in warnings), warnings
        state = loop.TrainState(config, loop.make_strategy(config.training))
        tf.train.Checkpoint(**state.trackables()).restore(metrics["checkpoint"]).assert_existing_objects_matched()
        np.testing.assert_allclose(state.masks.current_sparsities.numpy(), config.sparsity.levels, atol=1e-6)
        floor = config.training.learning_rate * config.training.min_lr_ratio
        assert float(optim.ProgressSchedule(optim.make_schedule(config.training), state.progress)(0)) \
            == pytest.approx(floor, rel=1e-4)


def test_checkpoint_without_progress_clock_still_restores(tmp_path):
    """Checkpoints written before the progress clock existed resume; the clock starts at their step."""
    config = tiny_config("omni")
    state = loop.TrainState(config, loop.make_strategy(config.training))
    state.counters.step.assign(3)
    legacy = {k: v for k, v in state.trackables().items() if k != "progress"}
    tf.train.CheckpointManager(tf.train.Checkpoint(**legacy), str(tmp_path / "ckpt"), 3,
                               checkpoint_name="ckpt").save(checkpoint_number=3)
    config.training.max_steps = 4
    metrics = loop.train(config, str(tmp_path), sources.RandomFeatureSource(16, num_batches=2))
    assert metrics["restored_from"].endswith("ckpt-3") and metrics["step"] == 4
    assert metrics["schedule_step"] == 4


def test_consecutive_skipped_steps_stop_training_naming_the_utterances(tmp_path):
    config = tiny_config("dense")
    config.training.max_consecutive_skips = 3
    config.training.max_steps = 10
    # Every batch of the epoch is poisoned (the model of an all-NaN cmvn.json): today this ran to exit 0.
    src = sources.RandomFeatureSource(16, num_batches=1, nan_batch=0)
    with pytest.raises(loop.NonFiniteError, match=r"3 consecutive updates skipped \(steps 1-3\)") as err:
        loop.train(config, str(tmp_path), src)
    assert "e0-b0-u0" in str(err.value) and "e1-b0-u3" in str(err.value)
    assert "max_consecutive_skips=3" in str(err.value)


def test_isolated_skips_do_not_stop_training(tmp_path):
    config = tiny_config("dense")
    config.training.max_consecutive_skips, config.training.max_steps = 2, 4
    metrics = loop.train(config, str(tmp_path), sources.RandomFeatureSource(16, num_batches=2, nan_batch=1))
    assert metrics["step"] == 4 and metrics["skipped_nonfinite"] == 2
