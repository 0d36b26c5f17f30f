"""Structured omni-sparsity (omni_tf/sparsity/structured.py): nested unit masks consistent across paired
kernels, exact sliced sizes, and sliced tiers (Keras and TFLite) equal to the masked full model."""

import numpy as np
import pytest
import tensorflow as tf

import omni_tf  # noqa: F401
from omni_tf.configs import model as model_configs
from omni_tf.model import build_model
from omni_tf.sparsity import sampling, search, structured
from omni_tf.sparsity.masking import SupernetMasks
from omni_tf.sparsity.size import SizeModel
from tflite_export import convert, inference_model

LEVELS = (0.0, 0.3, 0.5, 0.7, 0.9)


def small_config(**overrides):
    c = model_configs.tiny()
    c.d_model, c.num_layers, c.num_heads, c.ff_dim, c.conv_kernel = 16, 2, 4, 24, 5
    c.vocab_size, c.pred_embed_dim, c.pred_hidden, c.joint_dim, c.dropout = 11, 8, 12, 10, 0.0
    c.pred_layers, c.chunk_ms, c.lookahead_ms, c.left_chunks = 2, 80, 20, 2
    for key, value in overrides.items():
        setattr(c, key, value)
    return c


def ranked(config=None, seed=0):
    """A tiny model with random (non-zero) biases and norms, and its ranked structured masks."""
    config = config or small_config()
    model = build_model(config)
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(rng.normal(scale=0.5, size=v.shape).astype(np.float32))
    masks = SupernetMasks(model, LEVELS, granularity="structured")
    masks.update_rankings()
    return model, masks, config


def test_groups_names_and_levels_vector():
    model, masks, config = ranked()
    expected = [f"encoder/block_{i}/{p}" for i in range(config.num_layers) for p in ("mhsa", "conv", "ffn")]
    assert list(masks.names) == [*expected, "decoder"]
    assert masks.num_kernels == len(masks.names)  # samplers and search see only this many genes
    rows = sampling.make_sampler("sandwich", masks.num_kernels, masks.num_levels)(3).numpy()
    masks.apply_levels(rows[-1])  # a per-layer row applies without error
    survival = masks.survival_arrays()
    assert survival["encoder/block_0/mhsa/heads"].shape == (config.num_heads,)
    assert survival["decoder/lstm_1"].shape == (config.pred_hidden,)
    assert survival["decoder/joint"].shape == (config.joint_dim,)


@pytest.mark.parametrize("level", range(len(LEVELS)))
def test_unit_masks_nested_and_consistent_across_paired_kernels(level):
    model, masks, _ = ranked()
    survival = masks.survival_arrays()
    for fam, surv in survival.items():
        n = len(surv)
        kept = (surv >= level).sum()
        assert kept == max(1, int(np.floor(n * (1 - LEVELS[level]) + 0.5))), fam
        if level:
            assert np.all((surv >= level) <= (surv >= level - 1)), fam  # nested
    masks.apply_uniform(level)
    expected = {}
    for g in masks.groups:
        for f in g.families:
            keep = survival[f.name] >= level
            for m in f.members:
                target = m.mask if m.is_kernel else (m.variable if m.is_unit_mask else None)
                if target is None:
                    continue
                value = np.moveaxis(target.numpy(), m.axis, 0).reshape(m.repeats, f.num_units, m.width, -1)
                # every weight of a dropped unit is zero in every paired kernel
                np.testing.assert_array_equal(value[:, ~keep], 0.0, err_msg=f"{f.name} {target.name}")
                factor = np.tile(np.repeat(keep, m.width), m.repeats).astype(np.float32)
                shape = [1] * target.shape.rank
                shape[m.axis] = -1
                prev = expected.get(id(target), (target, np.ones(target.shape, np.float32)))[1]
                expected[id(target)] = (target, prev * factor.reshape(shape))
    for target, value in expected.values():  # kept units' weights are all kept (unless another unit drops)
        np.testing.assert_array_equal(target.numpy(), value, err_msg=target.name)
    # kernels outside every group (subsampling projection) are never masked
    for name, mask in model.kernel_masks():
        if name.startswith("encoder/subsampling"):
            np.testing.assert_array_equal(mask.numpy(), 1.0)


def test_group_norm_ranks_units_by_rms_over_paired_kernels():
    model, masks, _ = ranked()
    ffn = model.encoder.blocks[0].ffn
    expected = np.sqrt((np.square(ffn.dense_in.kernel.numpy()).sum(0)
                        + np.square(ffn.dense_out.kernel.numpy()).sum(1)) / (2 * 16))
    fam = masks.groups[2].families[0]
    np.testing.assert_allclose(structured.unit_scores(fam).numpy(), expected, rtol=1e-5)
    order = np.argsort(-expected, kind="stable")
    surv = masks.survival_arrays()[fam.name]
    assert surv[order[0]] == len(LEVELS) - 1 and np.all(np.diff(surv[order]) <= 0)


def _features(config, n=70, seed=1):
    return tf.constant(np.random.default_rng(seed).normal(size=[1, n, config.num_mel_bins]), tf.float32)


def _stream(model, features):
    cf, la = model.chunk_frames, model.lookahead_frames
    padded = model.encoder.pad_features(features, tf.constant([features.shape[1]]))
    state, outs = model.encoder_initial_state(1), []
    for c in range((padded.shape[1] - la) // cf):
        enc, state = model.encode_chunk(padded[:, c * cf: c * cf + cf + la], state)
        outs.append(enc)
    return tf.concat(outs, axis=1).numpy()


def _decoder_outputs(model, tokens):
    pred = model.predictor_forward(tf.constant([tokens]))
    state = model.predictor_initial_state(1)
    steps = []
    for t in [0, *tokens]:
        out, state = model.predictor_step(tf.constant([t]), state)
        steps.append(out)
    return pred.numpy(), tf.stack(steps, axis=1).numpy()


@pytest.mark.parametrize("tier", [2, "per_group"])
def test_sliced_model_equals_masked_full_model(tier):
    model, masks, config = ranked()
    if tier == "per_group":
        tier = {n: i % len(LEVELS) for i, n in enumerate(masks.names)}
        tier["decoder"] = len(LEVELS) - 1
    sliced = inference_model.slice_model(model, config, masks, tier)
    masks.apply(tier if isinstance(tier, dict) else {n: tier for n in masks.names})
    enc_block = sliced.encoder.blocks[0]
    assert enc_block.mhsa.attention_width < config.d_model or isinstance(tier, dict)
    feats = _features(config)
    full_masked, _ = model.encode(feats, tf.constant([70]))
    full_sliced, _ = sliced.encode(feats, tf.constant([70]))
    np.testing.assert_allclose(full_sliced.numpy(), full_masked.numpy(), atol=1e-5)
    streamed = _stream(sliced, feats)
    np.testing.assert_allclose(streamed[:, :18], full_sliced.numpy()[:, :18], atol=1e-5)
    tokens = [3, 1, 7]
    (pm, _), (ps, ss) = _decoder_outputs(model, tokens), _decoder_outputs(sliced, tokens)
    np.testing.assert_allclose(ps, ss, atol=1e-5)  # sliced predictor: training path == step path
    joint_m = model.join(full_masked[:, :, None], pm[:, None])
    joint_s = sliced.join(full_sliced[:, :, None], ps[:, None])
    np.testing.assert_allclose(joint_s.numpy(), joint_m.numpy(), atol=1e-5)
    # the sliced widths are the kept counts, and the caches shrink with the heads
    kept = structured.kept_units(masks.groups, masks.survival_arrays(),
                                 tier if isinstance(tier, dict) else {n: tier for n in masks.names})
    assert sliced.predictor.hidden == len(kept["decoder/lstm_1"])
    assert sliced.joiner.joint_dim == len(kept["decoder/joint"])
    heads = len(kept["encoder/block_0/mhsa/heads"])
    state = sliced.encoder_initial_state(1)
    assert state["block_0/key"].shape[-1] == heads * (config.d_model // config.num_heads)


def test_size_model_counts_the_sliced_model_exactly():
    model, masks, config = ranked()
    sizes = SizeModel.from_masks(masks, 0)
    assert isinstance(sizes, structured.StructuredSizeModel)
    full = sum(int(np.prod(v.shape)) for v in model.weights if "mask" not in v.name)
    assert sizes.measure(sizes.uniform_config(0), "nonzero_params") == full
    tiers = [1, 3, {n: (i * 3) % len(LEVELS) for i, n in enumerate(masks.names)}]
    for tier in tiers:
        config_ = tier if isinstance(tier, dict) else sizes.uniform_config(tier)
        sliced = inference_model.slice_model(model, config, masks, config_)
        params = [v for v in sliced.weights if "mask" not in v.name]
        kernels = {id(k) for _, k in sliced.prunable_kernels()}
        n_params = sum(int(np.prod(v.shape)) for v in params)
        int8 = sum(int(np.prod(v.shape)) + 12 * int(v.shape[-1]) if id(v) in kernels else
                   4 * int(np.prod(v.shape)) for v in params)
        assert sizes.measure(config_, "nonzero_params") == n_params
        assert sizes.measure(config_, "float32_bytes") == 4 * n_params
        assert sizes.measure(config_, "int8_bytes") == sizes.measure(config_, "int8_sparse_bytes") == int8
    # the search works on groups unchanged
    budget = sizes.measure(sizes.uniform_config(2), "int8_bytes")
    result = search.evolutionary_search(lambda c: float(sum(c.values())), sizes, budget, "int8_bytes",
                                        population=6, generations=2)
    assert set(result.config) == set(masks.names) and result.size <= budget


def test_checkpoint_round_trip_and_config_errors(tmp_path):
    model, masks, _ = ranked()
    path = tf.train.Checkpoint(masks=masks).save(str(tmp_path / "ckpt"))
    fresh = SupernetMasks(model, LEVELS, granularity="structured")
    tf.train.Checkpoint(masks=fresh).restore(path).assert_existing_objects_matched()
    for name, surv in masks.survival_arrays().items():
        np.testing.assert_array_equal(fresh.survival_arrays()[name], surv)
    with pytest.raises(ValueError, match="granularity"):
        SupernetMasks(model, LEVELS, granularity="channels")
    with pytest.raises(ValueError, match="missing groups"):
        inference_model.slice_model(model, small_config(), masks, {"decoder": 1})


def test_sliced_tier_tflite_has_smaller_shapes():
    model, masks, config = ranked(small_config(pred_layers=1, num_layers=1))
    module = inference_model.build_inference_module(model, config, 3, survival=masks)
    assert module.pred_dim < config.pred_hidden
    result = convert.convert_module(module, "float32", sparse="never")
    dense = convert.convert_module(inference_model.StreamingInferenceModule(model), "float32", sparse="never")
    sizes = SizeModel.from_masks(masks, 0)
    saved = sizes.measure(sizes.uniform_config(0), "float32_bytes") - sizes.measure(sizes.uniform_config(3),
                                                                                      "float32_bytes")
    # the file shrinks by the float32 bytes of the sliced-out params (measured: within 7 %; folded constants
    # such as the scaled query kernel shrink with them)
    assert abs((len(dense.content) - len(result.content)) - saved) < 0.1 * saved, (len(dense.content),
                                                                                   len(result.content), saved)
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=result.content)
    runner = interp.get_signature_runner("encode")
    details = runner.get_input_details()
    heads = int((masks.survival_arrays()["encoder/block_0/mhsa/heads"] >= 3).sum())
    key = [d for n, d in details.items() if n.endswith("block_0_key")][0]
    assert key["shape"][-1] == heads * (config.d_model // config.num_heads) < config.d_model
    # TFLite parity of the sliced tier with the Keras sliced (== masked full) model, one chunk
    rng = np.random.default_rng(2)
    feeds = {"features_chunk": rng.normal(size=[1, module.input_frames, 80]).astype(np.float32)}
    feeds.update(module.initial_state("encode"))
    lite = runner(**feeds)["encoder_frames"]
    keras = module.signatures()["encode"](**{k: tf.constant(v) for k, v in feeds.items()})
    keras = keras["encoder_frames"].numpy()
    np.testing.assert_allclose(lite, keras, atol=1e-4)


def test_search_and_export_a_byte_budget_tier_end_to_end(tmp_path):
    """Supernet from the config -> per-group search under an int8 byte budget (dev loss fitness) -> sliced
    float32 tier through bundle.export_tier (parity against Keras enforced), as recipes/end_to_end.py does."""
    from omni_tf.supernet import Supernet
    from omni_tf.training import evaluation, sources
    from tests.training_helpers import tiny_config
    from tflite_export import bundle, inference_model

    config = tiny_config("omni")
    config.sparsity.granularity = "structured"
    config.sparsity.search_population, config.sparsity.search_generations = 4, 1
    supernet = Supernet(config)
    masks = supernet.masks
    masks.update_rankings()
    assert masks.granularity == "structured" and masks.names[-1] == "decoder"
    assert supernet.kernel_names == tuple(masks.names)
    batches = evaluation.load_batches(sources.RandomFeatureSource(16, num_batches=1, batch_size=2).dataset(0))
    sizes = supernet.size_model()
    budget = 0.6 * sizes.dense_int8_bytes()
    found = evaluation.search_tiers(supernet, batches, {"t": budget}, metric="int8_bytes")["t"]
    assert found["size"] <= budget
    feats = [b["features"][0][: int(b["feature_lengths"][0])] for b in batches]
    baked = inference_model.bake_supernet(supernet, found["config"])
    manifest = bundle.export_tier(baked, "t", str(tmp_path / "tiers"), bundle.ParitySet(feats),
                                  bundle.ExportOptions("float32", latency_runs=2))
    assert manifest["nonzero_params"] == sizes.measure(found["config"], "nonzero_params")
    assert 0 < manifest["sparsity"]["prunable_sparsity"] < 1
    assert manifest["signatures"]["pred_dim"] <= config.model.pred_hidden


def test_bytes_budget_is_met_by_the_dynamic_int8_file_on_disk():
    """A ``bytes:F`` tier sized against measured dynamic-int8 files (``Supernet.budget`` with the dense
    file's bytes and the files' uncounted overhead, as ``end_to_end.tier_budgets`` measures them) is a
    sliced file of at most F x the dense file's bytes; the counted tensor bytes alone undercount each file."""
    from omni_tf.supernet import Supernet, TierSpec
    from tests.training_helpers import tiny_config
    from tflite_export import convert, inference_model

    def file_bytes(net, tier) -> int:
        module = inference_model.bake_supernet(net, tier).module
        return len(convert.convert_module(module, "dynamic_int8", sparse="never").content)

    config = tiny_config("omni")
    config.sparsity.granularity = "structured"
    supernet = Supernet(config)
    supernet.masks.update_rankings()
    sizes = supernet.size_model()
    files = {k: file_bytes(supernet, k) for k in range(len(supernet.levels))}
    counted = {k: sizes.measure(sizes.uniform_config(k), "int8_bytes") for k in files}
    assert all(files[k] > counted[k] for k in files)  # the file's overhead is not in the size model
    overhead = max(files[0] - counted[0], files[len(files) - 1] - counted[len(files) - 1])
    for fraction in (0.75, 0.72):
        budget = supernet.budget(TierSpec("bytes", fraction), "int8_bytes", files[0], overhead)
        assert budget == pytest.approx(fraction * files[0] - overhead)
        level = sizes.uniform_level_for_budget(budget, "int8_bytes")
        assert files[level] <= fraction * files[0]
        # sized on the counted bytes alone, the same fraction picks a file over the budget
        naive = sizes.uniform_level_for_budget(supernet.budget(TierSpec("bytes", fraction), "int8_bytes"),
                                               "int8_bytes")
        assert files[naive] > fraction * files[0]
