"""tflite_export.inference_model + convert: builtin-only check, quantization modes, baked zeros, sparsity."""

import numpy as np
import pytest
import tensorflow as tf

import omni_tf  # noqa: F401
from omni_tf.model import build_model
from tests.training_helpers import small_model_config
from tflite_export import convert, inference_model

LEVELS = (0.0, 0.5, 0.8, 0.9)
_SIZES: dict[str, int] = {}


small_config = small_model_config


# Weights for which this model's 1x4 sparse dynamic-int8 file equals the dense one without XNNPACK
# (test_sparse_int8_kept_only_where_it_agrees_and_records_delegate_option); seeds 0 and 1 are not.
MODEL_SEED = 2


@pytest.fixture(scope="module")
def model():
    # Keras initializers without a seed draw one from Keras' seed generator (Python's ``random``, seeded
    # per process, unless set here), not from tf.random.set_seed: the weights would differ per run.
    tf.keras.utils.set_random_seed(MODEL_SEED)
    return build_model(small_config())


def _block_encoded(content: bytes) -> list[str]:
    """Names of the sparse constants stored in blocks that ops read directly (no DENSIFY in front)."""
    model = convert.read_model(content)
    return [t.name.decode() for sub in model.subgraphs for t in sub.tensors
            if t.sparsity is not None and t.sparsity.blockMap is not None and len(t.sparsity.blockMap)]


def _zeros_feeds(runner):
    return {k: np.zeros(d["shape"], d["dtype"]) for k, d in runner.get_input_details().items()}


def test_check_rejects_flex_model():
    class Flex(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([2], tf.string)])
        def f(self, s):
            return {"n": tf.strings.length(s)}

    module = Flex()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([module.f.get_concrete_function()], module)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    content = conv.convert()
    assert any(k.startswith("CUSTOM:Flex") for k in convert.op_counts(content))
    with pytest.raises(convert.NonBuiltinOpError, match="Flex"):
        convert.check_builtin_only(content, "flex test")


def test_module_signatures_and_state_names(model):
    module = inference_model.build_inference_module(model, small_config(), tier=None)
    layout = module.describe()
    assert layout["chunk_frames"] == 16 and layout["lookahead_frames"] == 4 and layout["vocab_size"] == 16
    keys = {s["key"] for s in layout["encoder_state"]}
    assert keys == set(model.encoder_initial_state(1))
    for s in layout["encoder_state"] + layout["predictor_state"]:
        assert s["output"] == "new_" + s["input"] and s["input"].isidentifier()
    out = module.encode(tf.zeros([1, 20, 80]), *[tf.zeros(s["shape"]) for s in layout["encoder_state"]])
    assert out["encoder_frames"].shape == (1, 4, 32)


def test_tier_masks_are_baked_and_caller_model_untouched(model):
    before = [k.numpy().copy() for _, k in model.prunable_kernels()]
    module = inference_model.build_inference_module(model, small_config(), tier=2, levels=LEVELS, block=4)
    for (name, k), orig in zip(module.model.prunable_kernels(), before, strict=True):
        zeros = np.mean(k.numpy() == 0)
        assert abs(zeros - 0.8) < 0.02, name
        kept = k.numpy() != 0
        np.testing.assert_array_equal(k.numpy()[kept], orig[kept])
    for (_, m) in module.model.kernel_masks():
        assert np.all(m.numpy() == 1.0)
    for (_, k), orig in zip(model.prunable_kernels(), before, strict=True):
        np.testing.assert_array_equal(k.numpy(), orig)
    with pytest.raises(KeyError, match="unknown kernels"):
        inference_model.build_inference_module(model, small_config(), tier={"nope": 1}, levels=LEVELS)


@pytest.fixture(scope="module")
def block_sparse_module(model):
    return inference_model.build_inference_module(model, small_config(), tier=2, levels=LEVELS, block="1x4")


def test_zeroed_weights_are_zero_in_file_with_out_in_orientation(block_sparse_module):
    result = convert.convert_module(block_sparse_module, "float32", sparse="never")
    consts = convert.constant_buffers(result.content)
    matched = 0
    for name, kernel in block_sparse_module.model.prunable_kernels():
        k = kernel.numpy()
        if name.endswith("embedding"):
            continue
        want = k.T  # TFLite FULLY_CONNECTED weights are [out, in]
        hits = [n for n, (arr, shape, _) in consts.items()
                if shape == want.shape and arr.size == want.size and np.array_equal(arr.reshape(shape), want)]
        if hits:
            matched += 1
            w = consts[hits[0]][0].reshape(want.shape)
            blocks = (w.reshape(w.shape[0], -1, 4) != 0).sum(-1)  # 1x4 blocks along the input dim
            assert set(np.unique(blocks)) <= {0, 4}, name
            assert np.mean(w == 0) == pytest.approx(np.mean(k == 0))
    # the dense projections of the block, predictor and joiner appear as [out, in] constants
    assert matched >= 8, matched


def test_sparse_encoding_smaller_and_uses_block_sparse_fc(block_sparse_module):
    result = convert.convert_module(block_sparse_module, "float32", sparse="auto")
    assert result.sparse_encoded and result.sparse_bytes < result.dense_bytes / 2
    assert "DENSIFY" not in result.op_counts  # 1x4 float blocks are consumed by the sparse FC kernel
    model = convert.read_model(result.content)
    sparse_fc = [t for t in model.subgraphs[0].tensors if t.sparsity is not None]
    assert sparse_fc and all(list(t.sparsity.blockMap) == [1] for t in sparse_fc)
    assert convert.smoke_run(result.content)


def test_sparse_file_that_disagrees_with_dense_is_not_used(block_sparse_module, monkeypatch):
    dense = convert.convert_module(block_sparse_module, "float32", sparse="never").content
    assert convert.max_relative_diff(dense, dense) == 0.0
    sparse = convert.convert_module(block_sparse_module, "float32", sparse="always").content
    assert convert.max_relative_diff(dense, sparse) < 1e-5  # float sparse kernels compute the same
    f16 = convert.convert_module(block_sparse_module, "float16", sparse="always")
    assert not f16.sparse_encoded  # LiteRT 2.3.0: sparse float16 files output NaN (with or without XNNPACK)
    assert sum("disagrees" in n for n in f16.notes) == 2
    assert convert.max_relative_diff(dense, f16.content) < convert.SPARSE_RTOL
    monkeypatch.setattr(convert, "max_relative_diff", lambda *a, **k: 1.63)  # XNNPACK on sparse dyn-int8
    result = convert.convert_module(block_sparse_module, "float32", sparse="auto")
    assert not result.sparse_encoded and len(result.content) == result.dense_bytes
    assert any("disagrees" in n for n in result.notes)


@pytest.mark.parametrize("mode", convert.QUANT_MODES)
def test_every_mode_loads_and_runs(model, mode):
    module = inference_model.build_inference_module(model, small_config(), tier=None)
    rng = np.random.default_rng(0)

    def rep():
        for _ in range(4):
            yield "encode", {"features_chunk": rng.normal(size=[1, 20, 80]).astype(np.float32),
                             **{s.input_name: np.zeros(s.shape, np.float32) for s in module.encoder_state}}
            yield "predict", {"token": np.array([[3]], np.int32),
                              **{s.input_name: rng.normal(size=s.shape).astype(np.float32) * 0.1
                                 for s in module.predictor_state}}
            yield "join", {"encoder_frame": rng.normal(size=[1, 32]).astype(np.float32),
                           "pred_out": rng.normal(size=[1, 24]).astype(np.float32)}

    result = convert.convert_module(module, mode, representative=rep if mode == "int8" else None,
                                    sparse="never")
    interp = convert.make_interpreter(result.content)
    assert set(interp.get_signature_list()) == {"encode", "predict", "join"}
    for sig in ("encode", "predict", "join"):
        out = interp.get_signature_runner(sig)(**_zeros_feeds(interp.get_signature_runner(sig)))
        assert all(np.all(np.isfinite(v)) for v in out.values())
    logp = interp.get_signature_runner("join")(encoder_frame=np.ones([1, 32], np.float32),
                                               pred_out=np.ones([1, 24], np.float32))["log_probs"]
    assert logp.shape == (1, 16) and np.exp(logp).sum() == pytest.approx(1.0, abs=0.05)
    _SIZES[mode] = len(result.content)
    if mode != "float32" and "float32" in _SIZES:  # float32 runs first (QUANT_MODES order)
        assert _SIZES[mode] < 0.6 * _SIZES["float32"]
    if mode == "dynamic_int4" and "dynamic_int8" in _SIZES:
        assert _SIZES[mode] < 0.8 * _SIZES["dynamic_int8"]


def test_int8_requires_representative_data(model):
    module = inference_model.build_inference_module(model, small_config(), tier=None)
    with pytest.raises(ValueError, match="representative"):
        convert.convert_module(module, "int8", sparse="never")
    with pytest.raises(ValueError, match="unknown quantization"):
        convert.convert_module(module, "int4", sparse="never")


def test_sparse_int8_kept_only_where_it_agrees_and_records_delegate_option(model):
    """Whatever encoding/option is chosen computes what the dense file computes under that option."""
    delegates_off = 0
    for block in ("1x4", "1x16"):
        module = inference_model.build_inference_module(model, small_config(), tier=2, levels=LEVELS,
                                                        block=block)
        dense = convert.convert_module(module, "dynamic_int8", sparse="never").content
        if block == "1x4":  # the premise of the last assert, a property of the weights (MODEL_SEED)
            blocked = _block_encoded(convert.tflite_internal.mlir_sparsify(dense))
            assert not blocked, f"every sparse weight should be behind DENSIFY: {blocked}; MODEL_SEED?"
        for policy in ("auto", "always"):
            result = convert.convert_module(module, "dynamic_int8", sparse=policy)
            delegates = result.interpreter_options["use_default_delegates"]
            diff = convert.max_relative_diff(dense, result.content, default_delegates=delegates)
            assert diff <= convert.SPARSE_RTOL
            if result.sparse_encoded:
                assert result.sparse_bytes < result.dense_bytes
            else:
                assert any("sparse encoding not used" in n for n in result.notes)
            if policy == "auto":
                assert delegates  # auto never turns XNNPACK off
            elif not delegates:
                assert result.sparse_encoded
                assert "sparse file needs default delegates (XNNPACK) off" in result.notes
                delegates_off += 1
    # LiteRT 2.3.0: this model's 1x4 sparse dynamic-int8 file (DENSIFY ops) fails with XNNPACK and is right
    # without it, so "always" takes it with delegates off. Only for some weights: the sparsifier stores a
    # quantized FC weight in 1x16 blocks (no DENSIFY) when >80 % of its zeros fall in all-zero 1x16 blocks,
    # which depends on where the 1x4 mask lands; for seeds 0 and 1 it does so for the joiner output
    # [16, 24], and the builtin kernels then compute join log-probs 0.11-0.22 (relative) off the dense file.
    assert delegates_off >= 1
