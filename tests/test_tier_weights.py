"""sparsity.tier_weights: per-tier loss weights in the tier sandwich (sampling.py, step.py, loop.py)."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401
from benchmarks import omni_vs_pruned as ovp
from omni_tf.configs import experiment
from omni_tf.losses.rnnt import rnnt_loss
from omni_tf.sparsity import sampling
from omni_tf.supernet import SparsitySettings, Supernet, TierSpec, with_tier_levels
from omni_tf.training import loop, sources
from omni_tf.training import workdir as workdir_lib
from omni_tf.training.step import TrainStep
from tests.training_helpers import tiny_config

LEVELS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
N = 5


# -- (c) the weights vector of each step ----------------------------------------------------------------
def test_tiers_row_weights_follow_the_tiers_in_train_levels_order():
    # train_levels are given unsorted; the rows are dense, 0.6, 0.75, 0.9 and each weight follows its tier
    s = sampling.make_sampler("tiers", N, len(LEVELS), seed=4, levels=LEVELS, train_levels=(0.9, 0.6, 0.75),
                              tier_weights=(4.0, 1.0, 2.0))
    for step in (0, 7):
        np.testing.assert_array_equal(s.row_weights(step).numpy(), [1.0, 1.0, 2.0, 4.0])
        rows, weights = loop.sample_levels(s, step, warmup=False, distill=True)
        assert rows.shape == (4, N) and weights.dtype == np.float32
        np.testing.assert_array_equal(weights, [1.0, 1.0, 2.0, 4.0])
        np.testing.assert_allclose(weights / weights.sum(), [0.125, 0.125, 0.25, 0.5])  # the step's scales
    plain = sampling.make_sampler("tiers", N, len(LEVELS), levels=LEVELS, train_levels=(0.6, 0.75, 0.9))
    np.testing.assert_array_equal(plain.row_weights(3).numpy(), np.ones(4))


def test_tiers_random_row_weights_are_those_of_the_sampled_tiers():
    train, w = (0.5, 0.6, 0.7, 0.9), (1.0, 2.0, 3.0, 5.0)
    s = sampling.make_sampler("tiers_random", N, len(LEVELS), seed=1, levels=LEVELS, train_levels=train,
                              tier_weights=w)
    seen = set()
    for step in range(30):
        idx = s.tier_indices(step).numpy()  # [sparsest, other]
        rows, weights = loop.sample_levels(s, step, warmup=False, distill=True)
        other = w[idx[1]]
        np.testing.assert_array_equal(weights, [1.0, 5.0, other])
        assert np.all(rows[2] == LEVELS.index(train[idx[1]]))  # the weight is the row's own tier's
        np.testing.assert_allclose(weights / weights.sum(), np.array([1.0, 5.0, other]) / (6.0 + other))
        twin = sampling.make_sampler("tiers_random", N, len(LEVELS), seed=1, levels=LEVELS,
                                     train_levels=train, tier_weights=w)  # a resumed run: the same weights
        np.testing.assert_array_equal(twin.row_weights(step).numpy(), weights)
        seen.add(other)
    assert seen == {1.0, 2.0, 3.0}


def test_other_rows_weigh_one():
    s = sampling.make_sampler("fixed", N, len(LEVELS), target_level=2)
    rows, weights = loop.sample_levels(s, 3, warmup=False, distill=True)  # the dense teacher prepended
    assert rows.shape == (2, N) and np.all(rows[0] == 0) and np.all(rows[1] == 2)
    np.testing.assert_array_equal(weights, np.ones(2, np.float32))
    tiers = sampling.make_sampler("tiers", N, len(LEVELS), levels=LEVELS, train_levels=(0.6, 0.9),
                                  tier_weights=(1.0, 3.0))
    rows, weights = loop.sample_levels(tiers, 3, warmup=True, distill=False)  # dense warm-up: one row
    assert rows.shape == (1, N) and weights.tolist() == [1.0]
    assert [w.tolist() for w in loop.sample_levels(None, 3, False, False)] == [[[0]], [1.0]]


def test_supernet_sampler_gets_the_config_weights():
    c = tiny_config("omni")
    c.sparsity.sampler, c.sparsity.train_levels, c.sparsity.tier_weights = "tiers", (0.5, 0.8), (2, 3)
    np.testing.assert_array_equal(Supernet(c).sampler.row_weights(0).numpy(), [1.0, 2.0, 3.0])


# -- (d) errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler, weights, message", [
    ("sandwich", (1.0, 1.0, 2.0), r"tier_weights=\(1.0, 1.0, 2.0\) needs sparsity.sampler.*'sandwich'"),
    ("uniform", (1.0, 1.0, 2.0), r"'uniform'"),
    ("tiers", (1.0, 2.0), r"tier_weights=\(1.0, 2.0\) has 2 weights.*train_levels=\(0.6, 0.75, 0.9\) has 3"),
    ("tiers", (1.0, 1.0, 2.0, 2.0), "has 4 weights"),
    ("tiers_random", (1.0, 0.0, 2.0), r"weight 0.0 of tier 0.75 must be a finite number > 0"),
    ("tiers", (1.0, -1.0, 2.0), r"weight -1.0 of tier 0.75"),
    ("tiers", (1.0, float("nan"), 2.0), r"weight nan"),
    ("tiers", (1.0, 1.0, float("inf")), r"weight inf of tier 0.9"),
    ("tiers", (1.0, True, 2.0), r"weight True"),
    ("tiers", (1.0, "2", 2.0), r"weight '2'"),
])
def test_bad_tier_weights_raise_naming_the_field_and_value(sampler, weights, message):
    c = experiment.get_config("tiny,smoke")
    c.sparsity.sampler = sampler
    c.sparsity.tier_weights = weights
    with pytest.raises(ValueError, match="sparsity.tier_weights") as err:
        SparsitySettings.from_config(c.sparsity)
    assert err.match(message)
    with pytest.raises(ValueError, match="sparsity.tier_weights"):
        sampling.make_sampler(sampler, N, len(LEVELS), levels=LEVELS, train_levels=(0.6, 0.75, 0.9),
                              tier_weights=weights)


def test_a_tier_listed_twice_needs_one_weight():
    assert sampling.check_tier_weights("tiers", (0.6, 0.6, 0.9), (2, 2, 1)) == {0.6: 2.0, 0.9: 1.0}
    with pytest.raises(ValueError, match=r"tier 0.6 is listed twice"):
        sampling.check_tier_weights("tiers", (0.6, 0.6, 0.9), (1, 2, 1))
    assert sampling.check_tier_weights("sandwich", (0.6,), ()) == {}  # the default: nothing to check


def test_weights_are_checked_against_the_train_levels_the_tiers_make():
    c = experiment.get_config("tiny,demo")
    c.sparsity.sampler, c.sparsity.tier_weights = "tiers", (1.0, 1.0, 2.0)  # default train_levels: 3 tiers
    two = {"phone": TierSpec("sparsity", 0.75), "watch": TierSpec("sparsity", 0.9)}
    with pytest.raises(ValueError, match=r"has 3 weights.*train_levels=\(0.75, 0.9\) has 2"):
        with_tier_levels(c, two)
    c.sparsity.tier_weights = (1.0, 3.0)
    assert with_tier_levels(c, two).sparsity.tier_weights == (1.0, 3.0)


# -- (a), (b) the step ----------------------------------------------------------------------------------
def _dist(strategy, batch):
    ds = tf.data.Dataset.from_tensors({k: tf.constant(v) for k, v in batch.items()})
    return next(iter(strategy.experimental_distribute_dataset(ds)))


class _SgdStep:
    """A tiny omni model with SGD(1) (weights move by minus the applied gradient) and a fixed batch; every
    ``run`` starts from the same initial weights."""

    def __init__(self):
        config = tiny_config("omni")
        self.strategy = loop.make_strategy(config.training)
        self.state = state = loop.TrainState(config, self.strategy)
        with self.strategy.scope():
            state.optimizer = keras.optimizers.SGD(1.0)
            state.optimizer.build(state.model.trainable_variables)
        state.masks.update_rankings(state.masks.levels)
        self.fn = TrainStep(state.model, state.optimizer, self.strategy, rnnt_loss, state.counters,
                            state.masks)
        self.init = [w.copy() for w in state.model.get_weights()]  # with the masks (not trainable)
        self.init_trainable = [v.numpy().copy() for v in state.model.trainable_variables]
        self.micro = [_dist(self.strategy, sources.RandomFeatureSource(16, batch_size=2).batch(0, 0))]

    def run(self, levels: list[int], weights=None):
        self.state.model.set_weights(self.init)
        rows = np.array(levels)[:, None].repeat(self.state.masks.num_kernels, axis=1)
        out = self.fn(self.micro, rows, weights)
        assert bool(out["applied"])
        trained = [v.numpy() for v in self.state.model.trainable_variables]
        return out, [w - w0 for w, w0 in zip(trained, self.init_trainable, strict=True)]


@pytest.fixture(scope="module")
def sgd_step():
    return _SgdStep()


def test_default_weights_are_the_plain_mean_bit_for_bit(sgd_step):
    # the step's float32 scale w_s / (M * sum(w)) with all weights 1 is the 1 / (M * S) it used to be
    for s in range(1, 17):
        for m in range(1, 17):
            w = tf.ones([s], tf.float32)
            assert (w / (tf.reduce_sum(w) * float(m))).numpy()[0] == np.float32(1.0 / (m * s))
    runs = [sgd_step.run([0, 1, 2], w) for w in (None, np.ones(3, np.float32), np.full(3, 2.0, np.float32))]
    for out, deltas in runs[1:]:
        for key in ("loss", "subnet_loss", "grad_norm"):
            np.testing.assert_array_equal(out[key].numpy(), runs[0][0][key].numpy())
        for a, b in zip(deltas, runs[0][1], strict=True):
            np.testing.assert_array_equal(a, b)
    assert any(np.abs(d).max() > 0 for d in runs[0][1])


def test_applied_gradient_is_the_weighted_mean_of_the_subnets_gradients(sgd_step):
    dense_out, dense = sgd_step.run([0])  # each subnet alone: its own (micro-batch mean) gradient
    sparse_out, sparse = sgd_step.run([2])
    out, both = sgd_step.run([0, 2], np.array([1.0, 3.0], np.float32))
    for d, s, b in zip(dense, sparse, both, strict=True):
        np.testing.assert_allclose(b, 0.25 * d + 0.75 * s, atol=1e-5, rtol=1e-4)
    assert any(not np.allclose(d, s, atol=1e-4) for d, s in zip(dense, sparse, strict=True))
    # subnet_loss stays each subnet's unweighted mean loss; loss is their unweighted mean
    want = [float(dense_out["subnet_loss"][0]), float(sparse_out["subnet_loss"][0])]
    np.testing.assert_allclose(out["subnet_loss"].numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(float(out["loss"]), np.mean(want), rtol=1e-5)
    with pytest.raises(ValueError, match=r"weights must be \[S\] = \[2\]"):
        rows = np.zeros([2, sgd_step.state.masks.num_kernels], np.int32)
        sgd_step.fn(sgd_step.micro, rows, [1.0, 1.0, 1.0])


class _RecordingStep:
    """Stands in for ``TrainStep`` in ``loop.train``: records (step, levels, weights) and counts the step."""

    calls: list = []

    def __init__(self, model, optimizer, strategy, loss_fn, counters, *args, **kwargs):
        self.counters, self.element_spec = counters, None

    def __call__(self, micro_batches, levels, weights):
        _RecordingStep.calls.append((int(self.counters.step.numpy()), levels.copy(), weights.copy()))
        self.counters.step.assign_add(1)
        return {"applied": True, "utts": 1, "frames": 1, "ctc_infeasible": 0, "loss": 1.0, "grad_norm": 0.0,
                "subnet_loss": tf.ones([len(levels)]), "per_utt_loss": [], "ids": []}


def test_the_loop_hands_each_steps_weights_to_the_step_and_replays_them_on_resume(tmp_path, monkeypatch):
    c = tiny_config("omni")
    c.sparsity.levels, c.sparsity.train_levels = (0.0, 0.3, 0.5, 0.8), (0.3, 0.5, 0.8)
    c.sparsity.sampler, c.sparsity.tier_weights = "tiers_random", (1.0, 2.0, 4.0)
    c.sparsity.begin_step, c.sparsity.end_step, c.sparsity.frequency = 1, 2, 1  # step 0: dense warm-up
    c.training.max_steps, c.training.checkpoint_every, c.training.max_minutes = 6, 1, 0.0
    monkeypatch.setattr(loop, "TrainStep", _RecordingStep)
    monkeypatch.setattr(_RecordingStep, "calls", [])
    src = sources.RandomFeatureSource(16, num_batches=8)
    loop.train(c, str(tmp_path / "once"), src)
    once = _RecordingStep.calls
    monkeypatch.setattr(_RecordingStep, "calls", [])
    c.training.max_steps = 3
    loop.train(c, str(tmp_path / "resumed"), src)
    c.training.max_steps = 6
    loop.train(c, str(tmp_path / "resumed"), src)
    resumed = _RecordingStep.calls
    assert [step for step, _, _ in once] == [step for step, _, _ in resumed] == list(range(6))
    sampler = Supernet(c).sampler
    assert once[0][2].tolist() == [1.0] and once[0][1].shape[0] == 1  # the warm-up's dense row
    others = set()
    for (step, levels, weights), (_, levels_r, weights_r) in zip(once[1:], resumed[1:], strict=True):
        np.testing.assert_array_equal(weights, sampler.row_weights(step).numpy())
        np.testing.assert_array_equal(weights, weights_r)
        np.testing.assert_array_equal(levels, levels_r)
        assert weights.dtype == np.float32 and weights[:2].tolist() == [1.0, 4.0]  # dense, sparsest
        others.add(float(weights[2]))
    assert others == {1.0, 2.0}  # the random other tier's own weight


# -- (e) setting it: omni_vs_pruned variants and --config flags --------------------------------------------
VARIANT = "tiersw=sampler:tiers+distill_weight:0.5+distill_mode:mix+tier_weights:1/1/2"


def test_omni_vs_pruned_variant_sets_the_weights():
    from absl import flags as absl_flags

    items = absl_flags.FLAGS["omni_variants"].parser.parse(f"base,{VARIANT}")  # a comma list: '/' inside
    assert items == ["base", VARIANT]
    demo = experiment.get_config("tiny,demo")
    got = ovp.parse_omni_variants(items, demo.sparsity)
    assert got["tiersw"] == {"sampler": "tiers", "distill_weight": 0.5, "distill_mode": "mix",
                             "tier_weights": (1.0, 1.0, 2.0)}
    tiers = {"speaker": 0.6, "phone": 0.75, "wearable": 0.9}
    c = ovp.run_config(ovp.with_omni_variant(demo, got["tiersw"]), "omni", 800, tiers, None, True)
    assert (c.sparsity.train_levels, c.sparsity.tier_weights) == ((0.6, 0.75, 0.9), (1.0, 1.0, 2.0))
    np.testing.assert_array_equal(Supernet(c).sampler.row_weights(0).numpy(), [1.0, 1.0, 1.0, 2.0])
    assert ovp.config_digest(c) != ovp.config_digest(
        ovp.run_config(ovp.with_omni_variant(demo, {**got["tiersw"], "tier_weights": ()}), "omni", 800, tiers,
                       None, True))
    empty = ovp.parse_omni_variants(["x=sampler:tiers+tier_weights:"], demo.sparsity)["x"]
    assert empty["tier_weights"] == ()
    two = ovp.parse_omni_variants(["x=sampler:tiers+tier_weights:1/2"], demo.sparsity)["x"]
    with pytest.raises(ValueError, match="has 2 weights"):  # checked before any run trains
        ovp.run_config(ovp.with_omni_variant(demo, two), "omni", 800, tiers, None, True)


@pytest.mark.parametrize("item, message", [
    ("x=tier_weights:1/x/2", r"sparsity.tier_weights wants numbers separated by '/'.*'1/x/2'"),
    ("x=train_levels:0.5/0.9", r"tuple field sparsity.train_levels cannot be set.*only tier_weights"),
])
def test_omni_vs_pruned_bad_tuple_variant_raises(item, message):
    with pytest.raises(ValueError, match=message):
        ovp.parse_omni_variants([item], experiment.get_config("tiny,demo").sparsity)


@pytest.mark.parametrize("arg, want", [("(1,1,2)", (1, 1, 2)), ("(1.0,1.5,3)", (1.0, 1.5, 3)), ("()", ())])
def test_config_flag_sets_the_weights(arg, want):
    from absl import flags as absl_flags
    from ml_collections import config_flags

    argv = ["prog", "--config.sparsity.sampler=tiers", f"--config.sparsity.tier_weights={arg}"]
    fv = absl_flags.FlagValues()
    config_flags.DEFINE_config_file("config", f"{experiment.__file__}:tiny,smoke", flag_values=fv,
                                    lock_config=True, sys_argv=argv)
    fv(argv)
    assert fv.config.sparsity.tier_weights == want
    assert SparsitySettings.from_config(fv.config.sparsity).tier_weights == want


# -- (f) workdirs recorded before the field --------------------------------------------------------------
def test_a_workdir_recorded_before_the_field_resumes(tmp_path):
    config = experiment.get_config("tiny,smoke")
    old = config.to_dict()
    del old["sparsity"]["tier_weights"]  # config.json of a run made before the field existed
    os.makedirs(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "ckpt-1.index").write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert workdir_lib.config_changes(old, config) == []
    assert workdir_lib.with_added_fields(old)["sparsity"]["tier_weights"] == ()
    workdir_lib.claim(str(tmp_path), config).release()
    weighted = experiment.get_config("tiny,smoke")
    weighted.sparsity.sampler, weighted.sparsity.tier_weights = "tiers", (1.0, 1.0, 2.0)
    with pytest.raises(workdir_lib.ConfigChanged,
                       match=r"sparsity.tier_weights: '<absent>' -> \[1.0, 1.0, 2.0\]"):
        workdir_lib.claim(str(tmp_path), weighted)
    undigested = config.copy_and_resolve_references()
    with undigested.unlocked():
        del undigested.sparsity["tier_weights"]
    assert ovp.config_digest(config) == ovp.config_digest(undigested)
