"""tflite_export.bundle: export_tier files + manifest schema, parity gate, Android script, report parsing."""

import json
import os

import numpy as np
import pytest

import omni_tf  # noqa: F401
from omni_tf.configs import data as data_configs
from omni_tf.configs import model as model_configs
from omni_tf.model import build_model
from tflite_export import bundle, parity
from tflite_export.recognizer import LiteRTRecognizer

BENCHMARK_OUTPUT = """\
STARTING!
Log parameter values verbosely: [0]
Graph: [/data/local/tmp/omni_tf/t/model.tflite]
Signature to run: [encode]
The input model file size (MB): 1.7643
Initialized session in 12.5ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1571 first=1046 curr=284 min=271 max=1046 avg=305.2 std=41
Running benchmark for at least 200 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=3276 first=301 curr=290 min=270 max=712 avg=298.4 std=25 p5=276 median=291 p95=340
Inference timings in us: Init: 12532, First inference: 1046, Warmup (avg): 305.2, Inference (avg): 298.4
Memory footprint delta from the start of the tool (MB): init=5.28125 overall=6.48438
Overall peak memory footprint (MB) via periodic monitoring: 9.94141
"""


class StubTokenizer:
    """Decodes ids as letters; ``model_path`` points at a placeholder file (copied as spm.model)."""

    def __init__(self, path):
        self.model_path = path

    def decode(self, ids):
        return " ".join(chr(ord("A") + i % 26) for i in ids)


def small_config():
    c = model_configs.tiny()
    c.d_model, c.num_layers, c.num_heads, c.ff_dim, c.conv_kernel = 32, 1, 2, 64, 5
    c.vocab_size, c.pred_embed_dim, c.pred_hidden, c.joint_dim, c.dropout = 16, 16, 24, 24, 0.0
    return c


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    spm = out / "spm_src.model"
    spm.write_bytes(b"placeholder")
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=[n, 80]).astype(np.float32) for n in (30, 45)]
    cmvn = (np.full(80, 0.5, np.float32), np.full(80, 2.0, np.float32))
    manifest = bundle.export_tier(build_model(small_config()), small_config(), "u50_f32", 1, str(out),
                                  "float32", feats, data_config=data_configs.get_config(), cmvn=cmvn,
                                  tokenizer=StubTokenizer(str(spm)), references=["A B", "C"],
                                  levels=(0.0, 0.5, 0.9), block="1x4", latency_runs=5)
    return out, manifest, feats


def test_export_tier_files_and_manifest_schema(exported):
    out, manifest, _ = exported
    tier_dir = out / "u50_f32"
    files = ["android_benchmark.sh", "manifest.json", "model.tflite", "spm.model"]
    assert sorted(os.listdir(tier_dir)) == files
    on_disk = json.loads((tier_dir / "manifest.json").read_text())
    bundle.validate_manifest(on_disk)
    assert on_disk["bytes_on_disk"] == os.path.getsize(tier_dir / "model.tflite")
    assert on_disk["quantization"] == "float32"
    assert on_disk["chunk_ms"] == 160 and on_disk["lookahead_ms"] == 40
    assert on_disk["vocab_size"] == 16
    assert on_disk["sparsity"]["kind"] == "uniform" and on_disk["sparsity"]["level_sparsity"] == 0.5
    assert on_disk["sparsity"]["prunable_sparsity"] == pytest.approx(0.5, abs=0.02)
    assert on_disk["nonzero_params"] < on_disk["params"]
    fe = on_disk["frontend"]
    assert fe["sample_rate"] == 16000 and fe["num_mel_bins"] == 80 and fe["frame_step_ms"] == 10.0
    assert fe["cmvn_mean"][0] == 0.5 and fe["cmvn_std"][0] == 2.0
    assert on_disk["wer"]["keras"] == on_disk["wer"]["tflite"] and on_disk["wer"]["parity"]["passed"]
    lat = on_disk["latency"]
    assert set(lat["median_ms"]) == {"encode", "predict", "join"} and lat["rtf"] > 0
    assert "use_default_delegates" in on_disk["interpreter_options"]
    assert not any(k.startswith("CUSTOM") for k in on_disk["ops"])
    with pytest.raises(ValueError, match="misses keys"):
        bundle.validate_manifest({k: v for k, v in on_disk.items() if k != "frontend"})


def test_recognizer_from_tier_dir_matches_manifest_parity(exported):
    out, manifest, feats = exported
    rec = LiteRTRecognizer.from_tier_dir(str(out / "u50_f32"))
    toks = [rec.transcribe_features(f) for f in feats]
    hyps = [StubTokenizer("").decode(t) for t in toks]
    refs = [r.split() for r in ["A B", "C"]]
    assert parity.error_rate(refs, [h.split() for h in hyps]) == pytest.approx(manifest["wer"]["tflite"])


def test_android_script_has_one_valid_command_per_signature_and_thread(exported):
    out, manifest, _ = exported
    text = (out / "u50_f32" / "android_benchmark.sh").read_text()
    assert "adb push" in text
    cmds = bundle.parse_benchmark_script(text)
    assert sorted((c["signature_to_run_for"], c["num_threads"]) for c in cmds) == sorted(
        (s, t) for s in ("encode", "predict", "join") for t in ("1", "4"))
    for c in cmds:
        assert c["graph"].endswith("/u50_f32/model.tflite") and c["use_xnnpack"] == "true"
        assert int(c["num_runs"]) > 0
        if c["signature_to_run_for"] == "predict":
            name, lo, hi = c["input_layer_value_range"].split(",")
            assert name == "token" and 0 < int(lo) <= int(hi) < manifest["vocab_size"]
        else:
            assert "input_layer_value_range" not in c


def test_failing_parity_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(parity, "MIN_TOKEN_AGREEMENT", 1.01)  # unreachable: every float tier now fails
    feats = [np.random.default_rng(1).normal(size=[20, 80]).astype(np.float32)]
    with pytest.raises(parity.ParityError, match="token agreement 1.0000 >= 1.01"):
        bundle.export_tier(build_model(small_config()), small_config(), "bad", None, str(tmp_path), "float32",
                           feats, sparse="never")
    assert not (tmp_path / "bad").exists()


def test_parse_benchmark_output():
    got = bundle.parse_benchmark_output(BENCHMARK_OUTPUT)
    assert got["avg_ms"] == pytest.approx(0.2984) and got["median_ms"] == pytest.approx(0.291)
    assert got["init_ms"] == pytest.approx(12.532)
    assert got["memory_overall_mb"] == pytest.approx(6.48438)
    assert got["peak_memory_mb"] == pytest.approx(9.94141)
    assert bundle.parse_benchmark_output("nothing")["avg_ms"] is None


def test_report_and_pareto_plot(tmp_path, exported):
    _, manifest, _ = exported
    rows = bundle.report_rows([manifest])
    rows.append(dict(rows[0], tier="pruned_0.5", series="individually-pruned", wer_tflite=0.9, bytes=10))
    text = bundle.write_report(rows, str(tmp_path / "r.md"), device_results={"u50_f32": BENCHMARK_OUTPUT})
    assert "| u50_f32 |" in text and "0.291" in text
    png = bundle.pareto_plot(rows, str(tmp_path / "p.png"))
    assert os.path.getsize(png) > 1000


def test_int8_tier_records_calibration_and_gate_is_configurable(tmp_path):
    rng = np.random.default_rng(2)
    feats = [rng.normal(size=[n, 80]).astype(np.float32) for n in (40, 55)]
    calib = [rng.normal(size=[n, 80]).astype(np.float32) for n in (48, 64)]
    spm = tmp_path / "spm_src.model"
    spm.write_bytes(b"placeholder")
    common = dict(tokenizer=StubTokenizer(str(spm)), references=["A B C", "D E"], sparse="never",
                  latency_runs=3, calib_features=calib, calib_per_signature=40)
    model = build_model(small_config())
    manifest = bundle.export_tier(model, small_config(), "q8", None, str(tmp_path), "int8", feats,
                                  max_wer_rel_increase=10.0, **common)
    bundle.validate_manifest(manifest)
    cal = manifest["calibration"]
    assert cal["source"] == "calib_features" and cal["utterances"] == 2 and cal["max_per_signature"] == 40
    assert cal["keep_float"] == ["layer_norm", "softmax", "lstm_cell", "log_softmax"] and cal["float_ops"] > 0
    assert any(n.startswith("int8:") for n in manifest["conversion_notes"])
    assert manifest["wer"]["parity"]["max_wer_rel_increase"] == 10.0
    assert "+1000% rel" in manifest["wer"]["parity"]["criterion"]
    with pytest.raises(parity.ParityError, match=r"\+-100% rel"):  # limit 0: any word error fails
        bundle.export_tier(model, small_config(), "q8_strict", None, str(tmp_path), "int8", feats,
                           max_wer_rel_increase=-1.0, **common)
    assert not (tmp_path / "q8_strict").exists()
