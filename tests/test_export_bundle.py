"""tflite_export.bundle: export_tier files + manifest schema, parity gate, Android script, report parsing."""

import json
import os
import shlex

import numpy as np
import pytest

import omni_tf  # noqa: F401
from omni_tf import metrics
from omni_tf.configs import data as data_configs
from omni_tf.model import build_model
from tests.training_helpers import small_model_config
from tflite_export import bundle, convert, inference_model, parity
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


small_config = small_model_config


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    spm = out / "spm_src.model"
    spm.write_bytes(b"placeholder")
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=[n, 80]).astype(np.float32) for n in (30, 45)]
    cmvn = (np.full(80, 0.5, np.float32), np.full(80, 2.0, np.float32))
    baked = inference_model.bake(build_model(small_config()), small_config(), 1, levels=(0.0, 0.5, 0.9),
                                 block="1x4")
    data = bundle.ParitySet(feats, ["A B", "C"], StubTokenizer(str(spm)),
                            data_config=data_configs.get_config(), cmvn=cmvn)
    manifest = bundle.export_tier(baked, "u50_f32", str(out), data,
                                  bundle.ExportOptions("float32", latency_runs=5))
    return out, manifest, feats


def test_export_tier_files_and_manifest_schema(exported):
    out, manifest, _ = exported
    tier_dir = out / "u50_f32"
    files = ["COMPLETE.json", "android_benchmark.sh", "manifest.json", "model.tflite", "spm.model"]
    assert sorted(os.listdir(tier_dir)) == files
    record = bundle.fileio.verify_record(str(tier_dir), bundle.TIER_RECORD_KIND)  # size + sha256 per file
    assert sorted(record["files"]) == files[1:] and record["spec"]["tier"] == "u50_f32"
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
    assert metrics.wer(["A B", "C"], hyps) == pytest.approx(manifest["wer"]["tflite"])


def _split(text: str, sep: str) -> list[str]:
    return text.split(sep) if text else []  # the tool splits an empty flag into no items


def stock_tool_problems(flags: dict[str, str], model: dict, vocab_size: int) -> list[str]:
    """What the stock ``benchmark_model`` (tensorflow/lite/tools/benchmark/benchmark_tflite_model.cc,
    ValidateParams -> PopulateInputLayerInfo -> PopulateInputValueRanges -> FindLayerInfoIndex, and Init's
    input checks) would reject in one command; ``model`` = ``convert.signature_inputs`` of the file.

    Rules modelled: --graph given; --signature_to_run_for names a signature when the file has several;
    --input_layer (split on ',') and --input_layer_shape (split on ':') have as many items; each shape is
    comma-separated ints without -1; each --input_layer_value_range item (split on ':') is name,low,high with
    the name among --input_layer (else a FATAL abort) and integer low <= high; named inputs are matched to
    the signature subgraph's inputs by position: as many as it has (a CHECK), each of its rank (and, for
    these fixed-shape files, its shape). Ours on top: every integer input (token ids) gets a range inside
    [0, vocab), since the tool's default draws int32 from 0..99.
    """
    problems = []
    if not flags.get("graph"):
        problems.append("no --graph")
    sig = flags.get("signature_to_run_for", "")
    if sig not in model and (len(model) > 1 or sig):
        return problems + [f"signature {sig!r} not in the model {sorted(model)}"]
    inputs = model[sig] if sig else next(iter(model.values()))
    names = _split(flags.get("input_layer", ""), ",")
    shapes = _split(flags.get("input_layer_shape", ""), ":")
    if len(names) != len(shapes):
        return problems + [f"{len(names)} --input_layer names vs {len(shapes)} --input_layer_shape items"]
    parsed = []
    for shape in shapes:
        try:
            dims = [int(d) for d in shape.split(",")]
        except ValueError:
            return problems + [f"shape {shape!r} does not parse"]
        if -1 in dims:
            problems.append(f"shape {shape!r} has -1")
        parsed.append(tuple(dims))
    ranges = {}
    for item in _split(flags.get("input_layer_value_range", ""), ":"):
        parts = item.split(",")
        if len(parts) != 3:
            problems.append(f"value range item {item!r} is not name,low,high")
            continue
        if parts[0] not in names:
            problems.append(f"FATAL: value range name {parts[0]!r} not in --input_layer {names}")
            continue
        try:
            low, high = int(parts[1]), int(parts[2])
        except ValueError:
            problems.append(f"value range {item!r} is not integer")
            continue
        if low > high:
            problems.append(f"value range {item!r} has low > high")
        ranges[parts[0]] = (low, high)
    if names and len(names) != len(inputs):
        return problems + [f"CHECK: {len(names)} named inputs, signature {sig} has {len(inputs)}"]
    for j, (name, shape, dtype) in enumerate(inputs):
        if names and len(parsed[j]) != len(shape):
            problems.append(f"input #{j} ({name}) has rank {len(shape)}, flag shape {parsed[j]}")
        elif names and parsed[j] != shape:
            problems.append(f"input #{j} ({name}) has shape {shape}, flag shape {parsed[j]}")
        if dtype.startswith("INT"):
            flag_name = names[j] if names else None
            low, high = ranges.get(flag_name, (0, 99))
            if low < 0 or high >= vocab_size:
                problems.append(f"integer input {name} drawn from {low}..{high}, vocabulary has {vocab_size}")
    return problems


def test_android_script_commands_satisfy_the_stock_tool_flag_rules(exported):
    out, manifest, _ = exported
    content = (out / "u50_f32" / "model.tflite").read_bytes()
    model, vocab = convert.signature_inputs(content), manifest["vocab_size"]
    text = (out / "u50_f32" / "android_benchmark.sh").read_text()
    assert "adb push" in text
    cmds = bundle.parse_benchmark_script(text)
    assert sorted((c["signature_to_run_for"], c["num_threads"]) for c in cmds) == sorted(
        (s, t) for s in ("encode", "predict", "join") for t in ("1", "4"))
    for c in cmds:
        assert stock_tool_problems(c, model, vocab) == [], c
        assert c["graph"].endswith("/u50_f32/model.tflite") and c["use_xnnpack"] == "true"
        assert int(c["num_runs"]) > 0
        assert ("input_layer_value_range" in c) == (c["signature_to_run_for"] == "predict")
    predict = next(c for c in cmds if c["signature_to_run_for"] == "predict")
    assert f"token,1,{vocab - 1}" in predict["input_layer_value_range"].split(":")
    # The script before this check: a value range without --input_layer aborts the stock tool, and without
    # a range the token is drawn from 0..99.
    old = {"graph": "/data/local/tmp/omni_tf/t/model.tflite", "signature_to_run_for": "predict",
           "input_layer_value_range": f"token,1,{vocab - 1}"}
    assert any(p.startswith("FATAL") for p in stock_tool_problems(old, model, vocab))
    no_range = {k: v for k, v in predict.items() if k != "input_layer_value_range"}
    assert any("drawn from 0..99" in p for p in stock_tool_problems(no_range, model, vocab))
    swapped = dict(predict, input_layer=",".join(reversed(predict["input_layer"].split(","))))
    assert stock_tool_problems(dict(swapped, input_layer_shape="1,1"), model, vocab)
    assert stock_tool_problems(dict(predict, signature_to_run_for="decode"), model, vocab)
    # Values survive both shells (the local one and the device's, which re-splits adb shell's arguments).
    odd = bundle.android_benchmark_script("tier x'; rm -rf /", manifest["signatures"], content)
    graphs = {c["graph"] for c in bundle.parse_benchmark_script(odd)}
    assert graphs == {f"{bundle.DEVICE_DIR}/tier x'; rm -rf //model.tflite"}
    mkdir = next(line for line in odd.splitlines() if "mkdir" in line)
    assert shlex.split(shlex.split(mkdir)[2]) == ["mkdir", "-p", f"{bundle.DEVICE_DIR}/tier x'; rm -rf /"]


def test_auto_selection_rule():
    def cand(mode, size, ms, ok=True):
        return {"mode": mode, "bytes": size, "encode_ms": ms, "parity_passed": ok, "criterion": "c"}

    base = [cand("float32", 1000, 1.0), cand("dynamic_int8", 300, 0.5), cand("dynamic_int4", 200, 0.65)]
    mode, why = bundle.select_quantization(base)
    assert mode == "dynamic_int8"  # int4 is smaller but 1.3x slower than the fastest passing mode
    assert "too slow: dynamic_int4" in why and "300 B" in why
    assert bundle.select_quantization(base[:2] + [cand("dynamic_int4", 200, 0.6)])[0] == "dynamic_int4"
    assert bundle.select_quantization(base, max_latency_ratio=1.5)[0] == "dynamic_int4"
    # A failing mode neither wins nor sets the latency bar.
    failing = base + [cand("int8", 100, 0.1, ok=False)]
    assert bundle.select_quantization(failing) == ("dynamic_int8", bundle.select_quantization(failing)[1])
    assert "failed parity or conversion: int8" in bundle.select_quantization(failing)[1]
    assert bundle.select_quantization([{"mode": "int8", "parity_passed": False, "error": "boom"},
                                       cand("float32", 1000, 1.0)])[0] == "float32"
    tie = [cand("weight_only_int8", 300, 0.55), cand("dynamic_int8", 300, 0.5)]
    assert bundle.select_quantization(tie)[0] == "dynamic_int8"  # equal bytes: the faster one
    with pytest.raises(ValueError, match="no quantization mode passes parity: float32 \\(c\\)"):
        bundle.select_quantization([cand("float32", 1000, 1.0, ok=False)])


def test_auto_export_writes_the_selected_mode_and_records_why(tmp_path):
    rng = np.random.default_rng(5)
    feats = [rng.normal(size=[n, 80]).astype(np.float32) for n in (30, 40)]
    modes = ("float32", "dynamic_int8", "dynamic_int4")
    manifest = bundle.export_tier(inference_model.bake(build_model(small_config()), small_config()), "a",
                                  str(tmp_path), bundle.ParitySet(feats),
                                  bundle.ExportOptions("auto", sparse="never", latency_runs=5,
                                                       max_wer_rel_increase=10.0, auto_modes=modes))
    bundle.validate_manifest(manifest)
    auto = manifest["auto"]
    assert [c["mode"] for c in auto["candidates"]] == list(modes)
    assert all(c["bytes"] > 0 and c["encode_ms"] > 0 and "parity_passed" in c for c in auto["candidates"])
    chosen, why = bundle.select_quantization(auto["candidates"])
    assert manifest["quantization"] == auto["chosen"] == chosen and auto["why"] == why
    size = next(c["bytes"] for c in auto["candidates"] if c["mode"] == chosen)
    assert manifest["bytes_on_disk"] == size == os.path.getsize(tmp_path / "a" / "model.tflite")
    on_disk = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert on_disk["auto"]["candidates"] == auto["candidates"]


def test_failing_parity_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(parity, "MIN_TOKEN_AGREEMENT", 1.01)  # unreachable: every float tier now fails
    feats = [np.random.default_rng(1).normal(size=[20, 80]).astype(np.float32)]
    with pytest.raises(parity.ParityError, match="token agreement 1.0000 >= 1.01"):
        bundle.export_tier(inference_model.bake(build_model(small_config()), small_config()), "bad",
                           str(tmp_path), bundle.ParitySet(feats),
                           bundle.ExportOptions("float32", sparse="never"))
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
    data = bundle.ParitySet(feats, ["A B C", "D E"], StubTokenizer(str(spm)), calib_features=calib)
    common = dict(quantization="int8", sparse="never", latency_runs=3, calib_per_signature=40)
    baked = inference_model.bake(build_model(small_config()), small_config())
    manifest = bundle.export_tier(baked, "q8", str(tmp_path), data,
                                  bundle.ExportOptions(max_wer_rel_increase=10.0, **common))
    bundle.validate_manifest(manifest)
    cal = manifest["calibration"]
    assert cal["source"] == "calib_features" and cal["utterances"] == 2 and cal["max_per_signature"] == 40
    assert cal["keep_float"] == ["layer_norm", "softmax", "lstm_cell", "log_softmax"] and cal["float_ops"] > 0
    assert any(n.startswith("int8 (ai-edge-quantizer)") for n in manifest["conversion_notes"])
    assert manifest["quantizer"]["library"] == "ai-edge-quantizer" and manifest["quantizer"]["recipe"]
    assert manifest["wer"]["parity"]["max_wer_rel_increase"] == 10.0
    assert "+1000% rel" in manifest["wer"]["parity"]["criterion"]
    with pytest.raises(parity.ParityError, match=r"\+-100% rel"):  # limit 0: any word error fails
        bundle.export_tier(baked, "q8_strict", str(tmp_path), data,
                           bundle.ExportOptions(max_wer_rel_increase=-1.0, **common))
    assert not (tmp_path / "q8_strict").exists()
