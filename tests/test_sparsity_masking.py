"""Tests for omni_tf.sparsity.masking.SupernetMasks on a fake model (a few tf.Variables)."""
import numpy as np
import pytest
import tensorflow as tf

from omni_tf.sparsity import levels as lv
from omni_tf.sparsity.masking import SupernetMasks

LEVELS = lv.DEFAULT_LEVELS


class FakeModel:
    """Exposes prunable_kernels() / kernel_masks() like the Transducer."""

    def __init__(self, kernels: dict[str, np.ndarray]):
        self.kernels = {n: tf.Variable(v.astype(np.float32)) for n, v in kernels.items()}
        self.masks = {n: tf.Variable(tf.ones_like(v), trainable=False) for n, v in self.kernels.items()}

    def prunable_kernels(self):
        return list(self.kernels.items())

    def kernel_masks(self):
        return list(self.masks.items())


def _random_kernels(seed=0):
    rng = np.random.default_rng(seed)
    return {"enc/q": rng.normal(size=(32, 32)), "enc/ff1": rng.normal(size=(32, 64)),
            "dec/out": rng.normal(size=(37, 12))}  # 37: partial last block for 4 and 16


def _trained_like_kernels(seed=0):
    """Heavy-tailed, low-rank-plus-noise with per-column scales, and exact zeros / ties."""
    rng = np.random.default_rng(seed)
    low_rank = rng.normal(size=(48, 3)) @ rng.normal(size=(3, 40)) * np.exp(rng.normal(size=(1, 40)))
    tied = np.round(rng.normal(size=(33, 20)), 1)
    tied[:, :5] = 0.0
    return {"a": rng.standard_t(df=1.5, size=(64, 24)), "b": low_rank + 0.01 * rng.normal(size=(48, 40)),
            "c": tied}


@pytest.mark.parametrize("make", [_random_kernels, _trained_like_kernels])
@pytest.mark.parametrize("block", [1, 4, 16])
def test_masks_nested_and_exact_fraction(make, block):
    model = FakeModel(make())
    masks = SupernetMasks(model, LEVELS, block)
    masks.update_rankings()
    prev = {n: np.ones(v.shape, bool) for n, v in model.kernels.items()}
    for k, s in enumerate(LEVELS):
        masks.apply_uniform(k)
        report = masks.sparsity_report()
        for n, m in model.masks.items():
            m = m.numpy().astype(bool)
            assert np.all(m <= prev[n]), f"{n}: level {k} not nested in level {k - 1}"
            prev[n] = m
            size = m.size
            # within half a block (+ rounding) of the requested fraction
            assert abs(report[n] - s) <= (block / 2 + 0.5) / size + 1e-9, (n, k, report[n])
            zeros = size - m.sum()
            if m.shape[0] % block == 0:
                assert zeros == (lv.num_units(m.shape, block) - lv.keep_counts(
                    lv.num_units(m.shape, block), [s])[0]) * block


def test_apply_per_kernel_config_and_dense():
    model = FakeModel(_random_kernels(1))
    masks = SupernetMasks(model, LEVELS, 1)
    masks.update_rankings()
    config = {"enc/q": 0, "enc/ff1": 6, "dec/out": 3}
    masks.apply(config)
    report = masks.sparsity_report()
    assert report["enc/q"] == 0.0
    assert report["enc/ff1"] == pytest.approx(0.9, abs=1 / (32 * 64))
    assert report["dec/out"] == pytest.approx(0.6, abs=1 / (37 * 12))
    masks.apply([6, 0, 0])  # a level vector in kernel order
    assert masks.sparsity_report()["enc/q"] == pytest.approx(0.9, abs=1e-3)
    masks.apply_dense()
    assert all(v == 0.0 for v in masks.sparsity_report().values())
    with pytest.raises(ValueError, match="missing"):
        masks.apply({"enc/q": 1})


def test_masks_keep_the_largest_weights():
    model = FakeModel({"w": np.arange(1, 101, dtype=np.float32).reshape(10, 10) * np.where(
        np.arange(100).reshape(10, 10) % 2, -1, 1)})
    masks = SupernetMasks(model, LEVELS, 1)
    masks.update_rankings()
    masks.apply_uniform(4)  # 0.7: keep the 30 largest |w| = 71..100
    kept = np.abs(model.kernels["w"].numpy())[model.masks["w"].numpy() == 1]
    assert sorted(kept) == list(range(71, 101))


def test_before_ranking_all_levels_dense_and_unranked_current_targets():
    model = FakeModel(_random_kernels(2))
    masks = SupernetMasks(model, LEVELS, 4)
    masks.apply_uniform(6)
    assert all(v == 0.0 for v in masks.sparsity_report().values())
    masks.update_rankings(np.array(LEVELS) * 0.5)  # mid-ramp targets
    masks.apply_uniform(6)
    assert masks.sparsity_report()["enc/ff1"] == pytest.approx(0.45, abs=4 / (32 * 64))
    np.testing.assert_allclose(masks.current_sparsities.numpy(), np.array(LEVELS) * 0.5, atol=1e-7)


def test_tf_function_tensor_levels_do_not_retrace():
    model = FakeModel(_random_kernels(3))
    masks = SupernetMasks(model, LEVELS, 4)

    @tf.function
    def step(sparsities, level_vector):
        masks.update_rankings(sparsities)
        masks.apply_levels(level_vector)
        return tf.add_n([tf.reduce_sum(m) for _, m in model.kernel_masks()])

    step(tf.constant(LEVELS, tf.float32), tf.constant([0, 0, 0]))
    step(tf.constant(LEVELS, tf.float32), tf.constant([6, 2, 1]))
    assert step.experimental_get_tracing_count() == 1
    report = masks.sparsity_report()
    assert report["enc/q"] == pytest.approx(0.9, abs=2 / 1024)  # +-half a block of 4
    assert report["enc/ff1"] == pytest.approx(0.5, abs=2 / 2048)


def test_checkpoint_round_trip_of_survival(tmp_path):
    model = FakeModel(_random_kernels(4))
    masks = SupernetMasks(model, LEVELS, 1)
    masks.update_rankings()
    saved = masks.survival_arrays()
    path = tf.train.Checkpoint(masks=masks).save(str(tmp_path / "ckpt"))
    assert len(masks.variables) == 4  # 3 survival tensors + current sparsities; no model variables
    fresh = SupernetMasks(model, LEVELS, 1)
    tf.train.Checkpoint(masks=fresh).restore(path).assert_consumed()
    for n, v in fresh.survival_arrays().items():
        np.testing.assert_array_equal(v, saved[n])
    np.testing.assert_allclose(fresh.current_sparsities.numpy(), LEVELS, atol=1e-7)


def test_masked_kernel_values_is_pure():
    model = FakeModel(_random_kernels(5))
    masks = SupernetMasks(model, LEVELS, 1)
    masks.update_rankings()
    masks.apply_dense()
    values = masks.masked_kernel_values({"enc/q": 5, "enc/ff1": 0, "dec/out": 6})
    assert all(v == 0.0 for v in masks.sparsity_report().values())  # masks untouched
    assert np.mean(values["enc/q"] == 0) == pytest.approx(0.8, abs=1e-3)
    np.testing.assert_array_equal(values["enc/ff1"], model.kernels["enc/ff1"].numpy())
    masks.apply({"enc/q": 5, "enc/ff1": 0, "dec/out": 6})
    expected = (model.kernels["dec/out"] * model.masks["dec/out"]).numpy()
    np.testing.assert_array_equal(values["dec/out"], expected)


def test_bad_models_rejected():
    model = FakeModel(_random_kernels())
    model.masks = dict(reversed(list(model.masks.items())))
    with pytest.raises(ValueError, match="names/order"):
        SupernetMasks(model, LEVELS, 1)
    model = FakeModel({})
    with pytest.raises(ValueError, match="empty"):
        SupernetMasks(model, LEVELS, 1)
    with pytest.raises(ValueError, match="norm"):
        SupernetMasks(FakeModel(_random_kernels()), LEVELS, 1, norm="linf")


def test_real_tiny_model_masks_and_size():
    from omni_tf.configs import model as model_config
    from omni_tf.model import build_model
    from omni_tf.sparsity.size import SizeModel

    model = build_model(model_config.tiny())
    masks = SupernetMasks(model, LEVELS, "1x16")
    masks.update_rankings()
    features = tf.random.stateless_normal([1, 40, 80], seed=[1, 2])
    lengths = tf.constant([40])
    dense_out, _ = model.encode(features, lengths)
    masks.apply_uniform(4)  # 0.7 everywhere
    total = sum(int(np.prod(k.shape)) for _, k in model.prunable_kernels())
    kept = sum(float(tf.reduce_sum(m)) for _, m in model.kernel_masks())
    assert abs(1 - kept / total - 0.7) < 0.01
    for (name, kernel), (_, mask) in zip(model.prunable_kernels(), model.kernel_masks(), strict=True):
        assert mask.shape == kernel.shape, name
    sparse_out, _ = model.encode(features, lengths)
    assert float(tf.reduce_max(tf.abs(dense_out - sparse_out))) > 1e-3  # masks reach the forward pass
    sm = SizeModel.from_model(model, masks=masks)
    assert sm.measure(np.full(masks.num_kernels, 4), "nonzero_params") == sm.other_params + kept
    int8 = [sm.measure(np.full(masks.num_kernels, k), "int8_sparse_bytes") for k in range(len(LEVELS))]
    assert int8[0] == sm.dense_int8_bytes() and int8[4] < 0.6 * int8[0] and int8[6] < int8[4]


def test_under_mirrored_strategy_replica_context():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = FakeModel(_random_kernels(6))
        masks = SupernetMasks(model, LEVELS, 4)

    @tf.function
    def step(level_vector):
        def replica_fn(v):
            masks.update_rankings(tf.constant(LEVELS, tf.float32))
            masks.apply_levels(v)
        strategy.run(replica_fn, args=(level_vector,))

    step(tf.constant([5, 5, 5]))
    assert masks.sparsity_report()["enc/ff1"] == pytest.approx(0.8, abs=2 / 2048)
    masks.apply_uniform(0)  # cross-replica context, eager
    assert masks.sparsity_report()["enc/ff1"] == 0.0
