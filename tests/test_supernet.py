"""omni_tf.supernet: one object from the config (levels, masks, sampler, schedule, sizes, restore, tiers)."""
import gc
import logging

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import omni_tf  # noqa: F401
from omni_tf.supernet import (
    LevelSetMismatch,
    Supernet,
    TierSpec,
    budget_metric,
    parse_tiers,
    with_tier_levels,
)
from omni_tf.training import loop, sources
from omni_tf.training.checkpoint import CheckpointKeeper
from tests.training_helpers import tiny_config


def _saved(tmp_path, config) -> Supernet:
    net = Supernet(config)
    if net.masks is not None:
        net.masks.update_rankings()
    CheckpointKeeper(str(tmp_path), net.checkpoint_objects()).save(1)
    return net


@pytest.mark.parametrize("levels", [(0.0, 0.6, 0.8), (0.0, 0.5, 0.7, 0.8)])
def test_restore_with_another_level_set_names_both(tmp_path, levels):
    _saved(tmp_path, tiny_config("omni"))  # levels (0, 0.5, 0.8)
    other = tiny_config("omni")
    other.sparsity.levels = levels
    with pytest.raises(LevelSetMismatch, match=r"\(0\.0, 0\.5, 0\.8\).*" + re_tuple(levels)):
        Supernet(other).restore(str(tmp_path))


def re_tuple(levels) -> str:
    return r"\(" + r", ".join(str(s).replace(".", r"\.") for s in levels) + r"\)"


def test_restore_checks_mode_and_restores_survival(tmp_path):
    pruned = tiny_config("pruned")
    pruned.sparsity.target_sparsity = 0.8
    trained = _saved(tmp_path, pruned)
    for mode in ("omni", "dense"):
        with pytest.raises(LevelSetMismatch, match=r"\(0\.0, 0\.8\)"):
            Supernet(tiny_config(mode)).restore(str(tmp_path))
    again = Supernet(pruned)
    path, _ = again.restore(str(tmp_path))
    assert path.endswith("ckpt-1") and again.levels == (0.0, 0.8)
    for name, surv in trained.masks.survival_arrays().items():
        np.testing.assert_array_equal(again.masks.survival_arrays()[name], surv)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Supernet(pruned).restore(str(tmp_path / "empty"))


@pytest.mark.parametrize("mode", ["omni", "dense"])
def test_checkpoint_written_before_level_sets_were_stored_restores(tmp_path, mode):
    """A checkpoint without the ``level_set`` entry (every checkpoint of the code before it) restores with the
    config's level set, for evaluation and export (no ``extra`` objects)."""
    net = Supernet(tiny_config(mode))
    if net.masks is not None:
        net.masks.update_rankings()
    old = {k: v for k, v in net.checkpoint_objects().items() if k != "level_set"}
    CheckpointKeeper(str(tmp_path), old).save(3)
    again = Supernet(tiny_config(mode))
    path, _ = again.restore(str(tmp_path))
    assert path.endswith("ckpt-3")
    for a, b in zip(net.model.get_weights(), again.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_resuming_training_with_another_level_set_is_refused(tmp_path):
    config = tiny_config("omni")
    config.training.max_steps, config.sparsity.begin_step = 2, 0
    src = sources.RandomFeatureSource(16, num_batches=2, batch_size=2)
    loop.train(config, str(tmp_path), src)
    config.sparsity.levels = (0.0, 0.6, 0.8)  # same count: today a tier called 0.6 would be 0.5 sparse
    config.training.max_steps = 3
    with pytest.raises(ValueError, match=r"level set \(0\.0, 0\.5, 0\.8\).*\(0\.0, 0\.6, 0\.8\)"):
        loop.train(config, str(tmp_path), src)


def test_config_fields_reach_masks_sampler_and_schedule():
    config = tiny_config("omni")
    config.sparsity.norm, config.sparsity.random_kind = "l1", "uniform"
    config.sparsity.sampler, config.sparsity.subnets_per_step = "sandwich", 3
    config.sparsity.dense_warmup, config.sparsity.power = False, 2
    net = Supernet(config)
    assert net.masks.norm == "l1" and net.masks.levels == (0.0, 0.5, 0.8)
    rows = net.sampler(7).numpy()
    assert rows.shape == (5, net.masks.num_kernels)
    assert all((r == r[0]).all() for r in rows[2:])  # random_kind=uniform: one level per random subnet
    assert net.schedule.power == 2 and not bool(net.schedule.in_warmup(0))
    pruned = tiny_config("pruned")
    pruned.sparsity.target_sparsity = 0.7
    net = Supernet(pruned)
    assert net.levels == (0.0, 0.7) and (net.sampler(0).numpy() == 1).all() and net.distill_weight == 0.0
    dense = Supernet(tiny_config("dense"))
    assert dense.masks is None and dense.sampler is None and dense.levels == ()
    bad = tiny_config("omni")
    bad.training.mode = "sparse"
    with pytest.raises(ValueError, match="training.mode"):
        Supernet(bad)


def test_parse_tiers_syntax_and_errors():
    tiers = parse_tiers(["phone=sparsity:0.75", "watch=bytes:0.2", "s3=level:3"])
    assert tiers == {"phone": TierSpec("sparsity", 0.75), "watch": TierSpec("bytes", 0.2),
                     "s3": TierSpec("level", 3)}
    assert str(tiers["s3"]) == "level:3" and str(tiers["phone"]) == "sparsity:0.75"
    for item, message in (("phone:0.75", "expected name=kind:value"), ("p=size:3", "kind 'size'"),
                          ("p=sparsity:1.2", r"in \[0, 1\)"), ("p=bytes:0", "> 0"),
                          ("p=level:1.5", "integer")):
        with pytest.raises(ValueError, match=message):
            parse_tiers([item])
    with pytest.raises(ValueError, match="given twice"):
        parse_tiers(["a=level:1", "a=level:2"])
    with pytest.raises(ValueError, match="not accepted here"):
        parse_tiers(["a=bytes:0.3"], kinds=("level", "sparsity"))


def test_tier_sparsities_become_levels_and_train_levels():
    from omni_tf.configs import experiment

    config = experiment.get_config("tiny,demo")  # levels (0, .3, .5, .6, .7, .8, .9), train (.6, .75, .9)
    config.sparsity.train_levels = (0.5,)
    demo = parse_tiers(["speaker=sparsity:0.6", "phone=sparsity:0.75", "wearable=sparsity:0.9"])
    c = with_tier_levels(config, demo)
    assert c.sparsity.levels == (0.0, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9)  # 0.6 / 0.9 not repeated
    assert c.sparsity.train_levels == (0.6, 0.75, 0.9)
    assert config.sparsity.levels == (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)  # the input is not modified
    assert config.sparsity.train_levels == (0.5,)
    unordered = with_tier_levels(config, parse_tiers(["a=sparsity:0.95", "b=sparsity:0.05",
                                                      "c=sparsity:0.3"]))
    assert unordered.sparsity.levels == (0.0, 0.05, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
    assert unordered.sparsity.train_levels == (0.05, 0.3, 0.95)
    for kinds in (["a=bytes:0.3", "b=level:3"], ["a=bytes:0.3"], ["b=level:30"]):  # no sparsity known
        other = with_tier_levels(config, parse_tiers(kinds))
        assert other.sparsity.levels == config.sparsity.levels and other.sparsity.train_levels == (0.5,)
    # a level:K tier is level K of the extended set: the tiers samplers train it, not train_levels as set
    by_level = with_tier_levels(config, parse_tiers(["watch=sparsity:0.95", "phone=level:4"]))
    assert by_level.sparsity.levels[4] == 0.7 and by_level.sparsity.train_levels == (0.7, 0.95)
    ends = with_tier_levels(config, parse_tiers(["a=level:0", "b=level:6"]))
    assert ends.sparsity.train_levels == (0.0, 0.9)
    mixed = with_tier_levels(config, parse_tiers(["a=sparsity:0.85", "b=bytes:0.3"]))
    assert mixed.sparsity.levels == (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9)
    assert mixed.sparsity.train_levels == (0.5,)  # a bytes tier's levels come from the search
    net = Supernet(with_tier_levels(tiny_config("omni"), parse_tiers(["t=sparsity:0.6"])))
    assert net.levels == (0.0, 0.5, 0.6, 0.8)
    assert net.tier(TierSpec("sparsity", 0.6)) == dict.fromkeys(net.kernel_names, 2)


def test_tiers_samplers_refuse_a_tier_they_would_not_train():
    from omni_tf.configs import experiment

    config = experiment.get_config("tiny,demo,tier_sandwich")  # sampler tiers, train_levels (.6, .75, .9)
    assert config.sparsity.sampler == "tiers"
    keep = ("sparsity.train_levels",)
    for items in (["phone=sparsity:0.75", "watch=bytes:0.3"], ["watch=bytes:0.3"], ["w=level:30"]):
        with pytest.raises(ValueError, match=r"tier (watch=bytes:0.3|w=level:30) has no sparsity level.*"
                                             r"--config.sparsity.train_levels"):
            with_tier_levels(config, parse_tiers(items))
    # given explicitly, the levels to train for a bytes tier are the user's
    given = with_tier_levels(config, parse_tiers(["phone=sparsity:0.75", "watch=bytes:0.3"]), keep)
    assert given.sparsity.train_levels == (0.6, 0.75, 0.9)
    with pytest.raises(ValueError, match=r"--config.sparsity.train_levels=\(0.6, 0.75, 0.9\) lacks the "
                                         r"level of tier a=0.8, b=0.3"):
        with_tier_levels(config, parse_tiers(["a=sparsity:0.8", "b=level:1", "c=sparsity:0.9"]), keep)
    other = experiment.get_config("tiny,demo")  # sampler uniform: train_levels unread, nothing refused
    assert other.sparsity.sampler != "tiers"
    assert with_tier_levels(other, parse_tiers(["watch=bytes:0.3"])).sparsity.train_levels == \
        other.sparsity.train_levels


def test_tiers_and_budgets():
    net = Supernet(tiny_config("omni"))
    net.masks.update_rankings()
    names = net.kernel_names
    assert net.tier(TierSpec("sparsity", 0.8)) == dict.fromkeys(names, 2) == net.tier(2)
    with pytest.raises(ValueError, match=r"not one of the levels \(0\.0, 0\.5, 0\.8\)"):
        net.tier(TierSpec("sparsity", 0.6))
    with pytest.raises(ValueError, match="outside the level set"):
        net.tier(TierSpec("level", 3))
    with pytest.raises(ValueError, match="missing"):
        net.tier({names[0]: 1})
    sizes = net.size_model()
    exact = sizes.measure(sizes.uniform_config(1), "nonzero_params")
    assert net.budget(TierSpec("sparsity", 0.5), "nonzero_params") == exact
    assert net.budget(TierSpec("level", 1), "nonzero_params") == exact
    between = net.budget(TierSpec("sparsity", 0.6), "nonzero_params")  # analytic, between levels 1 and 2
    assert sizes.measure(sizes.uniform_config(2), "nonzero_params") < between < exact
    assert net.budget(TierSpec("bytes", 0.5), "int8_sparse_bytes") == pytest.approx(
        0.5 * sizes.dense_int8_bytes())
    with pytest.raises(ValueError, match="needs a bytes size metric"):
        net.budget(TierSpec("bytes", 0.5), "nonzero_params")
    assert budget_metric("auto", "float32") == "float32_sparse_bytes"
    assert budget_metric("auto", "dynamic_int8") == net.budget_metric("dynamic_int8") == "nonzero_params"
    assert budget_metric("int8_sparse_bytes", "float32") == "int8_sparse_bytes"
    with pytest.raises(ValueError, match="search_metric 'bytes' unknown"):
        budget_metric("bytes", "float32")


def test_restored_supernet_bakes_its_trained_survival_levels(tmp_path):
    from omni_tf.configs import experiment
    from tests.training_helpers import small_model_config
    from tflite_export import inference_model

    levels = (0.0, 0.5, 0.8, 0.9)
    config = experiment.get_config("tiny,smoke")
    config.model = small_model_config()
    config.sparsity.levels, config.sparsity.block = levels, "1x4"
    trained = Supernet(config)
    trained.masks.update_rankings(levels)
    CheckpointKeeper(str(tmp_path), trained.checkpoint_objects()).save(1)
    restored = Supernet(config)
    assert restored.restore(str(tmp_path))[0].endswith("ckpt-1")
    want = trained.masks.survival_arrays()
    for name, surv in restored.masks.survival_arrays().items():
        np.testing.assert_array_equal(surv, want[name])
    baked = inference_model.bake_supernet(restored, TierSpec("sparsity", 0.9))
    assert baked.tier == 3 and baked.levels == levels and baked.block == "1x4"
    for name, kernel in baked.module.model.prunable_kernels():
        orig = dict(trained.model.prunable_kernels())[name].numpy()
        np.testing.assert_array_equal(kernel.numpy(), np.where(want[name] >= 3, orig, 0.0))
    with pytest.raises(ValueError, match="not one of the levels"):
        inference_model.bake_supernet(restored, TierSpec("sparsity", 0.7))


_UNRESTORED = ("could not be found in the restored object", "being deleted with unrestored values")


def _saved_with_optimizer(tmp_path, mode: str, level_set: bool = True) -> Supernet:
    """A checkpoint of a training state: the supernet plus a built Adam (2 moments per variable)."""
    net = Supernet(tiny_config(mode))
    if net.masks is not None:
        net.masks.update_rankings()
    optimizer = tf_keras.optimizers.Adam()
    optimizer.build(net.model.trainable_variables)
    objects = {k: v for k, v in net.checkpoint_objects().items() if level_set or k != "level_set"}
    CheckpointKeeper(str(tmp_path), {**objects, "optimizer": optimizer}).save(1)
    return net


@pytest.mark.parametrize("mode,level_set", [("omni", True), ("dense", True), ("omni", False)])
def test_evaluation_restore_skips_the_optimizer_without_warnings(tmp_path, caplog, mode, level_set):
    """Evaluation/search/export restore no optimizer: none of TensorFlow's per-value warnings about it (there
    were hundreds), also for a checkpoint written before level sets were stored; the weights do restore."""
    trained = _saved_with_optimizer(tmp_path, mode, level_set)
    caplog.set_level(logging.INFO)
    again = Supernet(tiny_config(mode))
    assert again.restore(str(tmp_path))[0].endswith("ckpt-1")
    for a, b in zip(trained.model.get_weights(), again.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    del again
    gc.collect()  # TensorFlow logs unrestored values when the restored objects are deleted
    assert not [r.getMessage() for r in caplog.records if any(m in r.getMessage() for m in _UNRESTORED)]


def test_evaluation_restore_still_refuses_a_model_variable_missing_from_the_checkpoint(tmp_path):
    _saved_with_optimizer(tmp_path, "omni")
    again = Supernet(tiny_config("omni"))
    again.model.not_in_checkpoint = tf.Variable(tf.zeros([3]), name="not_in_checkpoint")
    with pytest.raises(ValueError, match=r"ckpt-1 does not match this model/config"):
        again.restore(str(tmp_path))
