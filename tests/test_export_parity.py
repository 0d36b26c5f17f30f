"""tflite_export.recognizer + parity: LiteRT streaming greedy == Keras streaming greedy; int8 vs float."""

import numpy as np
import pytest
import tensorflow as tf

import omni_tf  # noqa: F401
from omni_tf import decoding, metrics
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
    tf.keras.utils.set_random_seed(1)  # fixed weights (tf.random.set_seed leaves Keras initializers unseeded)
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
    assert result.quantizer["float_ops"] > 0
    assert result.quantizer["keep_float"] == list(convert.INT8_KEEP_FLOAT)
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


def _own_ranges(content: bytes, samples) -> dict[str, tuple[float, float]]:
    """{tensor name: (min, max)} of every float tensor over the samples, each tensor's own values (LiteRT
    with all tensors preserved, no delegates): the reference the calibrated ranges must equal."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=content, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    ranges: dict[str, tuple[float, float]] = {}
    for key, feeds in samples:
        runner = interp.get_signature_runner(key)
        runner(**feeds)
        for d in interp.get_tensor_details(runner._subgraph_index):
            if d["dtype"] != np.float32:
                continue
            try:
                value = interp.get_tensor(d["index"], runner._subgraph_index)
            except ValueError:
                continue
            if value.size:
                lo, hi = ranges.get(d["name"], (np.inf, -np.inf))
                ranges[d["name"]] = (min(lo, float(value.min())), max(hi, float(value.max())))
    return ranges


def test_int8_recipe_keeps_named_groups_float_and_calibrates_each_tensor_own_range(module, float_file):
    """ai-edge-quantizer int8: the float groups stay float; a residual branch output gets its own range."""
    feats = utterances(seed=4, lengths=(70,))
    samples = parity.collect_representative(module, feats, max_per_signature=30)
    rules = convert.quantization_recipe("int8")
    assert [r["regex"] for r in rules if r["algorithm_key"] == "no_quantize" and r["operation"] == "*"] == [
        convert.INT8_FLOAT_GROUPS[g] for g in convert.INT8_KEEP_FLOAT]
    assert {"regex": ".*", "operation": "LOG_SOFTMAX", "algorithm_key": "no_quantize"} in rules
    qsvs = convert.calibrate(float_file, rules, samples)
    own = _own_ranges(float_file, samples)
    # The attention output projection feeds an in-place residual ADD (TF 2.21's calibrator recorded the
    # ADD's range for it): its range must be its own, narrower than the residual sum's.
    fc_name = next(n for n in qsvs if n.startswith("output/MatMul"))
    res_name = next(n for n in qsvs if n.startswith("residual_1/"))
    for name in (fc_name, res_name):
        got = (float(np.min(qsvs[name]["min"])), float(np.max(qsvs[name]["max"])))
        assert got == pytest.approx(own[name], rel=1e-5, abs=1e-6)
    assert own[fc_name][1] - own[fc_name][0] < 0.7 * (own[res_name][1] - own[res_name][0])
    # Running min/max over all samples, not a moving average: the attention-validity cache starts at zeros
    # and fills with ones, so its range is exactly [0, 1].
    valid = next(n for n in qsvs if n.startswith("encode_cache_block_0_valid"))
    assert (float(np.min(qsvs[valid]["min"])), float(np.max(qsvs[valid]["max"]))) == (0.0, 1.0)

    content, details = convert.quantize(float_file, "int8", samples)
    groups = convert.float_group_ops(content, convert.INT8_KEEP_FLOAT)
    assert all(total > 0 and kept == total for kept, total in groups.values()), groups
    assert details["float_ops"] == sum(kept for kept, _ in groups.values())
    layers = _int8_layer_outputs(content)
    fc_q = next(n for n in layers if n.startswith("output/MatMul"))
    res_q = next(n for n in layers if n.startswith("residual_1/"))
    assert layers[fc_q][0] == "INT8" and layers[res_q][0] == "INT8"
    assert layers[fc_q][1] < layers[res_q][1]
    lo, hi = own[fc_q]
    assert layers[fc_q][1] == pytest.approx((max(hi, 0.0) - min(lo, 0.0)) / 255, rel=0.02)
    assert layers["mhsa_norm/batchnorm/Rsqrt"][0] == "FLOAT32"
    assert layers[next(n for n in layers if n.startswith("qkv/"))][0] == "INT8"  # fused q/k/v projection
    interp = convert.make_interpreter(content)
    for sig in ("encode", "predict", "join"):  # float interface
        runner = interp.get_signature_runner(sig)
        assert all(d["dtype"] in (np.float32, np.int32) for d in runner.get_input_details().values())
        assert all(d["dtype"] == np.float32 for d in runner.get_output_details().values())
    everything_int8 = convert.quantize(float_file, "int8", samples, keep_float=())[0]
    assert _int8_layer_outputs(everything_int8)["mhsa_norm/batchnorm/Rsqrt"][0] == "INT8"
    with pytest.raises(ValueError, match="unknown int8 float groups"):
        convert.quantization_recipe("int8", ["layernorm"])
    with pytest.raises(ValueError, match="needs calibration samples"):
        convert.quantize(float_file, "int8")


# max |int4 - float32| / max(1, max |float32|) per output on random inputs (convert.max_relative_diff):
# 0.11-0.25 over five random initializations of this model (int4 step = max |w| / 7 per output channel).
INT4_MAX_RELATIVE_DIFF = 0.35


def test_dynamic_int4_file_loads_with_signatures_and_is_close_to_float(module, float_file):
    result = convert.convert_module(module, "dynamic_int4", sparse="auto")
    assert not result.sparse_encoded and any("int4" in n for n in result.notes)
    interp = convert.make_interpreter(result.content)
    assert set(interp.get_signature_list()) == {"encode", "predict", "join"}
    for sig, want in convert.signature_inputs(float_file).items():
        assert convert.signature_inputs(result.content)[sig] == want
    model = convert.read_model(result.content)
    types = {v: k for k, v in vars(convert.schema.TensorType).items() if not k.startswith("_")}
    weight_types = {types[t.type] for sub in model.subgraphs for t in sub.tensors
                    if t.buffer and model.buffers[t.buffer].data is not None and len(t.shape) == 2}
    assert "INT4" in weight_types
    assert len(result.content) < 0.8 * len(convert.quantize(float_file, "dynamic_int8")[0])
    for delegates in (True, False):  # XNNPACK's int4 kernels and the builtin ones
        assert convert.max_relative_diff(float_file, result.content, delegates) <= INT4_MAX_RELATIVE_DIFF


def test_check_parity_raises_with_numbers(module, float_file):
    report = parity.run_parity(module, float_file, "float32", utterances(lengths=(20,)))
    bad = dict(report, passed=False, identical_tokens=0, token_agreement=0.0)
    with pytest.raises(parity.ParityError, match=r"identical 0/1.*encode/encoder_frames"):
        parity.check_parity(bad, "tier_x")
    wer_report = dict(report, mode="int8", wer_keras=0.20, wer_tflite=0.21)
    assert not parity._verdict(wer_report)[0]
    assert parity._verdict(dict(wer_report, wer_tflite=0.205))[0]


def test_parity_wer_is_the_normalized_metrics_wer(module, float_file):
    """wer_keras / wer_tflite count like metrics.wer (the REPORT's wer_keras_test): case and spacing are
    normalized, so a hypothesis equal to the reference up to case is 0 errors."""
    feats = utterances(lengths=(20,))
    report = parity.run_parity(module, float_file, "float32", feats, references=["Hello  World"],
                               decode=lambda ids: "hello world")
    assert report["wer_keras"] == 0.0 and report["wer_tflite"] == 0.0
    report = parity.run_parity(module, float_file, "float32", feats, references=["Hello world again"],
                               decode=lambda ids: "hello word")
    assert report["wer_keras"] == pytest.approx(metrics.wer(["Hello world again"], ["hello word"]))
    assert report["wer_keras"] == pytest.approx(2 / 3)
