"""tflite_export.recognizer + parity: LiteRT streaming greedy == Keras streaming greedy; int8 vs float."""

import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf

import omni_tf  # noqa: F401
from omni_tf import decoding
from omni_tf.configs import model as model_configs
from omni_tf.model import build_model
from tflite_export import convert, inference_model, parity
from tflite_export.recognizer import LiteRTRecognizer, ModuleRecognizer, chunk_windows


def small_config():
    c = model_configs.tiny()
    c.d_model, c.num_layers, c.num_heads, c.ff_dim, c.conv_kernel = 32, 2, 2, 64, 5
    c.vocab_size, c.pred_embed_dim, c.pred_hidden, c.joint_dim, c.dropout = 16, 16, 24, 24, 0.0
    c.left_chunks = 2
    return c


def utterances(seed=0, lengths=(13, 50, 97)):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=[n, 80]).astype(np.float32) for n in lengths]


@pytest.fixture(scope="module")
def module():
    tf.random.set_seed(1)
    model = build_model(small_config())
    return inference_model.build_inference_module(model, small_config(), tier=None)


@pytest.fixture(scope="module")
def float_file(module):
    return convert.convert_module(module, "float32", sparse="never").content


def test_chunk_windows_follow_model_padding_rule():
    feats = np.arange(37 * 2, dtype=np.float32).reshape(37, 2)
    wins, valid = chunk_windows(feats, 16, 4)
    assert len(wins) == 3 and valid == 10 and all(w.shape == (20, 2) for w in wins)
    np.testing.assert_array_equal(wins[1][:, 0], feats[16:36, 0])
    np.testing.assert_array_equal(wins[2][:5], feats[32:37])
    assert not wins[2][5:].any()  # zero padding past T


def test_litert_encoder_frames_equal_full_utterance_encode(module, float_file):
    rec = LiteRTRecognizer(float_file, module.describe())
    for feats in utterances(lengths=(13, 97)):
        got = rec.encoder_frames(feats)
        want, lengths = module.model.encode(feats[None], tf.constant([feats.shape[0]]))
        assert got.shape[0] == int(lengths[0])
        np.testing.assert_allclose(got, want.numpy()[0, : got.shape[0]], atol=1e-4)


def test_float32_tokens_identical_to_keras_streaming_greedy(module, float_file):
    feats = utterances()
    report = parity.run_parity(module, float_file, "float32", feats)
    assert report["passed"] and report["identical_tokens"] == len(feats)
    for f in feats:
        want = decoding.streaming_greedy_search(module.model, f[None])
        assert LiteRTRecognizer(float_file, module.describe()).transcribe_features(f) == want
        assert ModuleRecognizer(module).transcribe_features(f) == want
    assert max(report["max_abs_diff"].values()) < 1e-4
    assert set(report["max_abs_diff"]) >= {"encode/encoder_frames", "predict/pred_out", "join/log_probs"}


def test_quantized_close_to_float_on_nontrivial_weights(module):
    """Dynamic-range int8 stays close to float; full int8 runs on calibration from the streaming loop."""
    feats = utterances(seed=3, lengths=(60, 90))
    ref = ModuleRecognizer(module).transcribe_features(feats[0])
    assert len(ref) > 5  # the random model emits many distinct tokens: a non-trivial comparison
    dyn = convert.convert_module(module, "dynamic_int8", sparse="never").content
    report = parity.run_parity(module, dyn, "dynamic_int8", feats)
    scale = np.abs(module.model.encode(feats[0][None], tf.constant([60]))[0].numpy()).max()
    assert report["max_abs_diff"]["encode/encoder_frames"] < 0.1 * scale
    assert report["max_abs_diff"]["join/log_probs"] < 0.2
    assert report["token_error_rate_vs_keras"] < 0.25
    samples = parity.collect_representative(module, feats, max_per_signature=40)
    assert {name for name, _ in samples} == {"encode", "predict", "join"}
    assert any(np.any(f["cache_block_0_valid"]) for n, f in samples if n == "encode")  # real caches
    result = convert.convert_module(module, "int8", parity.representative_fn(samples), sparse="never")
    assert result.int8["float_ops"] > 0 and result.int8["keep_float"] == list(convert.INT8_KEEP_FLOAT)
    diffs = parity.max_abs_diffs(module, result.content, samples[::4])
    assert diffs["encode/encoder_frames"] < 0.1 * scale
    assert diffs["join/log_probs"] < 0.2 and diffs["predict/pred_out"] < 0.05
    report = parity.run_parity(module, result.content, "int8", feats)
    assert report["token_error_rate_vs_keras"] < 0.25


def _int8_layer_outputs(content: bytes) -> dict[str, tuple[str, float | None]]:
    """{first name of an op output: (dtype name, scale)} over all subgraphs of a TFLite file."""
    model = convert.read_model(content)
    names = {v: k for k, v in vars(convert.schema.TensorType).items() if not k.startswith("_")}
    out = {}
    for sub in model.subgraphs:
        for op in sub.operators:
            for i in op.outputs:
                t = sub.tensors[i]
                scale = float(t.quantization.scale[0]) if t.quantization is not None and \
                    t.quantization.scale is not None and len(t.quantization.scale) else None
                out[t.name.decode().split(";")[0]] = (names[t.type], scale)
    return out


def test_int8_keeps_named_groups_float_and_uses_remeasured_ranges(module):
    feats = utterances(seed=4, lengths=(70,))
    samples = parity.collect_representative(module, feats, max_per_signature=30)
    rep = parity.representative_fn(samples)
    conv = _fresh_int8_converter(module, rep)
    conv._experimental_calibrate_only = True
    calibrated = conv.convert()
    measured = convert.measure_activation_ranges(calibrated, samples)
    fixed, _ = convert.recalibrate(calibrated, samples)
    model = convert.read_model(fixed)
    checked = 0
    for s_index, sub in enumerate(model.subgraphs):
        for t_index, t in enumerate(sub.tensors):
            q, key = t.quantization, (s_index, t_index)
            if q is not None and q.min is not None and key in measured:
                assert (q.min[0], q.max[0]) == pytest.approx(measured[key])
                checked += 1
    assert checked > 50
    # The attention output projection feeds an in-place residual ADD: its int8 scale must come from its own
    # range, which is narrower than the residual sum's.
    content = convert.quantize_int8(_fresh_int8_converter(module, rep), samples)[0]
    layers = _int8_layer_outputs(content)
    fc_name = next(n for n in layers if n.startswith("output/MatMul"))
    res_name = next(n for n in layers if n.startswith("residual/"))
    assert layers[fc_name][0] == "INT8" and layers[res_name][0] == "INT8"
    assert layers[fc_name][1] < layers[res_name][1]
    # Kept-float groups have float outputs; matmuls are int8.
    assert layers["mhsa_norm/batchnorm/Rsqrt"][0] == "FLOAT32"
    assert any(n.startswith("masked_softmax/") and v[0] == "FLOAT32" for n, v in layers.items())
    assert any(n.startswith("lstm_cell/") and v[0] == "FLOAT32" for n, v in layers.items())
    assert layers[next(n for n in layers if n.startswith("qkv/"))][0] == "INT8"  # fused q/k/v projection
    everything_int8 = convert.quantize_int8(_fresh_int8_converter(module, rep), samples, keep_float=())[0]
    assert _int8_layer_outputs(everything_int8)["mhsa_norm/batchnorm/Rsqrt"][0] == "INT8"
    with pytest.raises(ValueError, match="unknown int8 float groups"):
        convert.float_kept_nodes(content, ["layernorm"])


def _fresh_int8_converter(module, rep):
    conv = convert._converter(module, os.path.join(tempfile.mkdtemp(), "saved"))
    convert._configure(conv, "int8", False, rep)
    return conv


def test_check_parity_raises_with_numbers(module, float_file):
    report = parity.run_parity(module, float_file, "float32", utterances(lengths=(20,)))
    bad = dict(report, passed=False, identical_tokens=0, token_agreement=0.0)
    with pytest.raises(parity.ParityError, match=r"identical 0/1.*encode/encoder_frames"):
        parity.check_parity(bad, "tier_x")
    wer_report = dict(report, mode="int8", wer_keras=0.20, wer_tflite=0.21)
    assert not parity._verdict(wer_report)[0]
    assert parity._verdict(dict(wer_report, wer_tflite=0.205))[0]
