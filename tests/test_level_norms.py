"""sparsity.per_level_norm: per-level LayerNorm gamma/beta (omni_tf/sparsity/level_norms.py) in the model,
the masks, training, restore and export."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import omni_tf  # noqa: F401
from benchmarks import compare_runs, retrain
from benchmarks import omni_vs_pruned as ovp
from omni_tf.layers.level_norm import LevelLayerNorm
from omni_tf.sparsity.level_norms import assign_params
from omni_tf.supernet import Supernet
from omni_tf.training import loop, pretrained, sources, workdir
from omni_tf.training.checkpoint import CheckpointKeeper
from tests.training_helpers import make_bundle, tiny_config
from tflite_export import convert, inference_model

K = 3  # tiny_config levels (0, 0.5, 0.8)


def _config(per_level: bool, mode: str = "omni"):
    c = tiny_config(mode)
    c.sparsity.per_level_norm = per_level
    return c


def _batch():
    src = sources.RandomFeatureSource(16, batch_size=2)
    return {k: tf.constant(v) for k, v in src.batch(0, 0).items() if k != "ids"}


def _ranked(per_level: bool) -> Supernet:
    s = Supernet(_config(per_level))
    s.masks.update_rankings()
    return s


def _outputs(supernet: Supernet, config) -> np.ndarray:
    supernet.masks.apply(config)
    return supernet.model(_batch())[0].numpy()


def _perturb_level(supernet: Supernet, k: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    norms = supernet.level_norms
    for layer, g, b in zip(norms.layers, norms.gamma_rest, norms.beta_rest, strict=True):
        if k == 0:
            layer.gamma.assign(layer.gamma + rng.normal(size=layer.gamma.shape) * 0.3)
            layer.beta.assign(layer.beta + rng.normal(size=layer.beta.shape) * 0.3)
        else:
            g[k - 1].assign(g[k - 1] + rng.normal(size=g.shape[1:]) * 0.3)
            b[k - 1].assign(b[k - 1] + rng.normal(size=b.shape[1:]) * 0.3)


def test_option_off_keeps_the_model_and_checkpoint_layout():
    off, on = Supernet(_config(False)), Supernet(_config(True))
    assert off.level_norms is None and "level_norms" not in off.checkpoint_objects()
    assert [(v.name, v.shape) for v in off.model.weights] == [(v.name, v.shape) for v in on.model.weights]
    assert set(on.checkpoint_objects()) == {*off.checkpoint_objects(), "level_norms"}
    # an unattached LevelLayerNorm is Keras's LayerNormalization, bit for bit
    x = tf.random.stateless_normal([2, 5, 32], seed=[0, 1]) * 3.0 + 1.0
    plain, ours = keras.layers.LayerNormalization(epsilon=1e-5), LevelLayerNorm(epsilon=1e-5)
    plain.build(x.shape)
    ours.build(x.shape)
    for a, b in zip(plain.weights, ours.weights, strict=True):
        b.assign(a + tf.random.stateless_normal(a.shape, seed=[2, 3]))
        a.assign(b)
    np.testing.assert_array_equal(plain(x).numpy(), ours(x).numpy())
    assert ours.num_levels == 0
    # parameters added: (K-1) x 2 x D per LayerNorm
    added = sum(int(np.prod(v.shape)) for v in on.level_norms.variables_to_train())
    assert added == sum((K - 1) * 2 * int(layer.gamma.shape[0]) for layer in on.level_norms.layers)


def test_at_init_every_level_equals_the_model_without_the_option():
    off, on = _ranked(False), _ranked(True)
    for k in range(K):
        config = {n: k for n in off.kernel_names}
        np.testing.assert_array_equal(_outputs(off, config), _outputs(on, config))
    off.masks.apply_dense()
    on.masks.apply_dense()
    np.testing.assert_array_equal(off.model(_batch())[0].numpy(), on.model(_batch())[0].numpy())


@pytest.mark.parametrize("changed", [0, 1])
def test_changing_one_level_changes_only_that_level(changed):
    s = _ranked(True)
    names = s.kernel_names
    before = [_outputs(s, {n: k for n in names}) for k in range(K)]
    _perturb_level(s, changed)
    for k in range(K):
        after = _outputs(s, {n: k for n in names})
        if k == changed:
            assert np.max(np.abs(after - before[k])) > 1e-3
        else:
            np.testing.assert_array_equal(after, before[k])


def test_norms_follow_their_producer_kernel_in_per_layer_configs():
    s = _ranked(True)
    norms = s.level_norms
    assert dict(zip(norms.names, norms.producers, strict=True)) == {
        "encoder/block_0/mhsa_norm": "encoder/subsampling/proj",
        "encoder/block_0/conv_norm": "encoder/block_0/mhsa/output",
        "encoder/block_0/conv/norm": "encoder/block_0/conv/pointwise_in",
        "encoder/block_0/ffn_norm": "encoder/block_0/conv/pointwise_out",
        "encoder/final_norm": "encoder/block_0/ffn/dense_out"}
    for k in range(1, K):
        _perturb_level(s, k, seed=k)
    rng = np.random.default_rng(0)
    config = {n: int(rng.integers(0, K)) for n in s.kernel_names}
    config["encoder/subsampling/proj"], config["encoder/block_0/mhsa/output"] = 2, 1
    out = _outputs(s, config)
    for producer, selector in zip(norms.producers, norms.selectors, strict=True):
        np.testing.assert_array_equal(selector.numpy(), np.eye(K)[config[producer]])
    # the same masks with a plain model holding each norm's level parameters compute the same
    plain = _ranked(False)
    for a, b in zip(s.model.weights, plain.model.weights, strict=True):
        b.assign(a)
    inference_model.bake_masks(plain.model, {n: m.numpy() for n, m in s.model.kernel_masks()})
    assign_params(plain.model, norms.params_at(config))
    np.testing.assert_allclose(plain.model(_batch())[0].numpy(), out, rtol=0, atol=1e-5)
    s.masks.apply_dense()
    assert all(np.array_equal(sel.numpy(), np.eye(K)[0]) for sel in norms.selectors)


def test_tiers_training_updates_only_the_trained_levels_and_resumes_them(tmp_path):
    c = _config(True)
    c.sparsity.sampler, c.sparsity.train_levels = "tiers", (0.5,)  # dense + level 1; level 2 untrained
    c.sparsity.begin_step, c.sparsity.dense_warmup = 0, False
    c.training.max_steps, c.training.weight_decay = 2, 0.0  # decoupled decay would shrink every row
    loop.train(c, str(tmp_path), sources.RandomFeatureSource(16, num_batches=2))
    s = Supernet(c)
    s.restore(str(tmp_path))
    for layer, g, b in zip(s.level_norms.layers, s.level_norms.gamma_rest, s.level_norms.beta_rest,
                           strict=True):
        assert not np.array_equal(layer.gamma.numpy(), np.ones(layer.gamma.shape)), layer.name  # level 0
        assert not np.array_equal(g.numpy()[0], np.ones(g.shape[1])), layer.name  # level 1
        np.testing.assert_array_equal(g.numpy()[1], np.ones(g.shape[1]))  # level 2: as initialised
        np.testing.assert_array_equal(b.numpy()[1], np.zeros(b.shape[1]))
        assert not np.array_equal(g.numpy()[0], layer.gamma.numpy())  # restored, not copied from level 0


def test_sparse_levels_start_from_the_warmed_up_dense_norms(tmp_path):
    c = _config(True)
    c.sparsity.sampler, c.sparsity.train_levels = "tiers", (0.5,)  # level 2 never trains
    c.sparsity.begin_step, c.sparsity.dense_warmup = 1, True  # step 0: dense warm-up
    c.training.max_steps, c.training.weight_decay, c.training.warmup_steps = 1, 0.0, 0
    loop.train(c, str(tmp_path), sources.RandomFeatureSource(16, num_batches=2))
    warm = Supernet(c)
    warm.restore(str(tmp_path))
    assert int(warm.level_norms.started.numpy()) == 0
    dense = [layer.gamma.numpy() for layer in warm.level_norms.layers]
    assert not np.array_equal(dense[0], np.ones_like(dense[0]))
    for g in warm.level_norms.gamma_rest:  # not trained, not yet started
        np.testing.assert_array_equal(g.numpy(), np.ones(g.shape))
    c.training.max_steps = 2  # resumes: step 1 trains dense + level 1 after copying
    loop.train(c, str(tmp_path), sources.RandomFeatureSource(16, num_batches=2))
    s = Supernet(c)
    s.restore(str(tmp_path))
    assert int(s.level_norms.started.numpy()) == 1
    for gamma, layer, g in zip(dense, s.level_norms.layers, s.level_norms.gamma_rest, strict=True):
        np.testing.assert_array_equal(g.numpy()[1], gamma)  # level 2: the dense gamma after the warm-up
        assert not np.array_equal(layer.gamma.numpy(), gamma)  # level 0 trained on


def test_restoring_a_checkpoint_without_levels_copies_gamma_beta_to_every_level(tmp_path):
    off = _ranked(False)
    for layer in (n for _, n, _ in off.model.level_norms()):
        layer.gamma.assign(tf.random.stateless_normal(layer.gamma.shape, seed=[4, 5]))
        layer.beta.assign(tf.random.stateless_normal(layer.beta.shape, seed=[6, 7]))
    CheckpointKeeper(str(tmp_path), off.checkpoint_objects()).save(0)
    on = Supernet(_config(True))
    on.restore(str(tmp_path))
    for layer, g, b in zip(on.level_norms.layers, on.level_norms.gamma_rest, on.level_norms.beta_rest,
                           strict=True):
        np.testing.assert_array_equal(g.numpy(), np.tile(layer.gamma.numpy(), [K - 1, 1]))
        np.testing.assert_array_equal(b.numpy(), np.tile(layer.beta.numpy(), [K - 1, 1]))
    for k in range(K):
        config = {n: k for n in off.kernel_names}
        np.testing.assert_array_equal(_outputs(off, config), _outputs(on, config))


def test_resuming_a_run_written_without_levels_with_the_option_is_refused(tmp_path):
    c = _config(False)
    c.training.max_steps = 1
    loop.train(c, str(tmp_path), sources.RandomFeatureSource(16, num_batches=2))
    c.sparsity.per_level_norm, c.training.max_steps = True, 2
    with pytest.raises(ValueError, match="cannot resume with it turned on"):
        loop.train(c, str(tmp_path), sources.RandomFeatureSource(16, num_batches=2))


def test_init_from_a_bundle_copies_gamma_beta_to_every_level(tmp_path):
    c = _config(True)
    c.training.init_from = make_bundle(str(tmp_path), tiny_config("dense"))
    c.training.max_steps, c.training.learning_rate = 1, 1e-30  # cannot move float32 weights of this size
    loop.train(c, str(tmp_path / "run"), sources.RandomFeatureSource(16))
    s = Supernet(c)
    s.restore(str(tmp_path / "run"))
    for layer, g in zip(s.level_norms.layers, s.level_norms.gamma_rest, strict=True):
        assert abs(float(layer.gamma.numpy()[0]) - 0.125) < 0.05  # the bundle's, not ones
        np.testing.assert_array_equal(g.numpy(), np.tile(layer.gamma.numpy(), [K - 1, 1]))


@pytest.mark.parametrize("per_level", [False, True])
def test_the_shipped_bundle_loads_with_and_without_the_option(per_level):
    path = pretrained.bundle_dir("demo_tiny")
    c = _config(per_level)
    c.model = pretrained.model_config(path)
    s = Supernet(c)
    with np.load(os.path.join(path, "weights.npz")) as data:
        names = set(data.files)
    assert pretrained.load_weights(s.model, path) == len(names)  # every shipped weight, nothing else
    if per_level:
        s.level_norms.copy_from_shared()
        for layer, g in zip(s.level_norms.layers, s.level_norms.gamma_rest, strict=True):
            assert layer.gamma.name in names
            np.testing.assert_array_equal(g.numpy(), np.tile(layer.gamma.numpy(), [K - 1, 1]))


def _encode_tflite(content: bytes, module, window: np.ndarray) -> np.ndarray:
    runner = convert.make_interpreter(content).get_signature_runner("encode")
    return runner(features_chunk=window, **module.initial_state("encode"))["encoder_frames"]


def test_exported_tier_holds_its_own_norms_and_matches_keras_at_that_tier():
    s = _ranked(True)
    for k in range(1, K):
        _perturb_level(s, k, seed=10 + k)
    model = s.model
    window = tf.random.stateless_normal([1, model.chunk_frames + model.lookahead_frames, 80], seed=[8, 9])

    def keras_encode(masks_level: int, norm_level: int) -> np.ndarray:
        s.masks.apply_uniform(masks_level)
        for sel in s.level_norms.selectors:
            sel.assign(tf.one_hot(norm_level, K))
        return model.encode_chunk(window, model.encoder_initial_state(1))[0].numpy()

    baked = inference_model.bake_supernet(s, 1)
    params = s.level_norms.params_at(1)
    for name, layer, _ in baked.module.model.level_norms():
        assert layer.num_levels == 0  # a plain LayerNorm holding tier 1's parameters
        np.testing.assert_array_equal(layer.gamma.numpy(), params[name][0])
    content = convert.convert_module(baked.module, "float32", sparse="never").content
    lite = _encode_tflite(content, baked.module, window.numpy())
    np.testing.assert_allclose(lite, keras_encode(1, 1), rtol=0, atol=1e-4)
    assert np.max(np.abs(lite - keras_encode(1, 2))) > 1e-2  # tier 2's norms would give another output
    with pytest.raises(ValueError, match="clone"):
        inference_model.build_inference_module(model, s.model_config, 1, s.levels,
                                               s.masks.survival_arrays(), clone=False, norms=params)


def test_structured_granularity_is_refused():
    c = _config(True)
    c.sparsity.granularity = "structured"
    with pytest.raises(ValueError, match="per_level_norm"):
        Supernet(c)


def test_configs_recorded_before_the_field_still_match_when_it_is_off():
    off, on = _config(False), _config(True)
    recorded = off.to_dict()
    del recorded["sparsity"]["per_level_norm"]  # a config.json written before the field existed
    assert workdir.config_changes(recorded, off) == []
    assert workdir.config_changes(recorded, on) == ["sparsity.per_level_norm: '<absent>' -> True"]
    old = off.copy_and_resolve_references()
    with old.unlocked():
        del old.sparsity["per_level_norm"]
    assert ovp.config_digest(off) == ovp.config_digest(old) != ovp.config_digest(on)


def test_a_checkpoint_with_levels_is_refused_by_a_config_without_them(tmp_path):
    on = _ranked(True)
    CheckpointKeeper(str(tmp_path), on.checkpoint_objects()).save(0)
    with pytest.raises(ValueError, match="per_level_norm=true"):  # its tiers would use level 0's norms
        Supernet(_config(False)).restore(str(tmp_path))


def test_exporting_a_model_with_levels_without_its_norms_is_refused():
    s = _ranked(True)
    with pytest.raises(ValueError, match="bake_supernet"):  # the clone would hold level 0's gamma/beta
        inference_model.build_inference_module(s.model, s.model_config, 1, s.levels,
                                               s.masks.survival_arrays())


def test_runs_recorded_before_the_field_load_and_retrain_with_it(tmp_path):
    recorded = json.loads(_config(False).to_json_best_effort())
    del recorded["sparsity"]["per_level_norm"]  # a config.json written before the field existed
    (tmp_path / workdir.CONFIG_FILE).write_text(json.dumps(recorded))
    run = compare_runs.load_run("A", str(tmp_path))
    assert run.config.sparsity.per_level_norm is False
    assert Supernet(run.config).level_norms is None
    new, changes = retrain.apply_overrides(run.config, {"sparsity.per_level_norm": "true"})
    assert new.sparsity.per_level_norm and changes == {"sparsity.per_level_norm": {"source": False,
                                                                                  "retrain": True}}
    _, changes = retrain.apply_overrides(new, {"sparsity.per_level_norm": "false"})  # turning it off changes
    assert changes == {"sparsity.per_level_norm": {"source": True, "retrain": False}}


def test_the_shipped_bundle_config_written_before_the_field_builds_a_supernet(tmp_path):
    c = compare_runs.bundle_config("demo_tiny", str(tmp_path), levels=(0.5,))  # its config.json lacks it
    assert c.sparsity.per_level_norm is False
    assert Supernet(c).level_norms is None
