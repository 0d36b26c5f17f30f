"""Full-int8 export variants of a trained checkpoint, side by side: accuracy vs float and encode latency.

Usage (from the repository root; the demo's output directory as example):
  python -m benchmarks.int8_export --config=omni_tf/configs/experiment.py:tiny,demo \\
      --workdir=runs/demo2/train/omni --data_dir=runs/demo2/data --calib_utterances=20 --dev_utterances=200

One dense-level tier, calibrated on the first ``--calib_utterances`` dev utterances and judged on the next
``--dev_utterances``. Rows: the ai-edge-quantizer modes of ``tflite_export/convert.py`` (dynamic int8, the
reference; weight-only int8; dynamic int4), full int8 calibrated with the library's default moving-average
ranges (default float groups), and full int8 with min/max ranges (``convert.calibrate``) and no / the
default / the default + residual + attention-score float groups. Columns:
``encoder_rel_err`` = mean |TFLite - Keras| / mean |Keras| of the encoder frames over the calibration
encode calls without zero-padded frames; ``identical`` / ``ter_vs_keras`` / WER from ``parity.run_parity``;
``encode_ms`` = median of 200 encode calls, 1 thread, XNNPACK.
"""
from __future__ import annotations

import time

import numpy as np
from absl import app, flags
from ai_edge_quantizer import quantizer
from ml_collections import config_flags

import omni_tf  # noqa: F401
from omni_tf import fileio
from omni_tf.configs import experiment
from omni_tf.data import features as features_lib
from omni_tf.data.librispeech import read_manifest
from omni_tf.supernet import Supernet
from omni_tf.text.tokenizer import Tokenizer
from omni_tf.training import sources
from tflite_export import bundle, convert, inference_model, parity
from tflite_export.recognizer import audio_features, module_runners

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "omni_tf/configs/experiment.py:tiny,demo", "Experiment config.",
                                lock_config=False)
flags.DEFINE_string("workdir", "runs/demo/train/omni", "Training workdir (checkpoints in <workdir>/ckpt, "
                    "TensorBoard logs, metrics).")
flags.DEFINE_string("data_dir", "runs/demo/data", "Prepared directory: <split>.tsv manifests, cmvn.json, "
                    "spm.model (experiment.with_data_dir: a --config.paths.* file given too wins unless the "
                    "program names that file).")
flags.DEFINE_integer("calib_utterances", 20, "Dev utterances for calibration.")
flags.DEFINE_integer("dev_utterances", 200, "Dev utterances (after the calibration ones) for parity / WER.")
flags.DEFINE_string("output", "", "Also write the Markdown table here.")

DEFAULT = list(convert.INT8_KEEP_FLOAT)
# (row name, mode, calibration ("min_max" | "moving_average", int8 only), float groups)
VARIANTS = (("dynamic_int8", "dynamic_int8", None, None),
            ("weight_only_int8", "weight_only_int8", None, None),
            ("dynamic_int4", "dynamic_int4", None, None),
            ("int8, moving-average ranges (library default)", "int8", "moving_average", DEFAULT),
            ("int8, min/max ranges, all int8", "int8", "min_max", []),
            ("int8, min/max ranges, default float groups", "int8", "min_max", DEFAULT),
            ("int8, min/max ranges, default + residual + scores", "int8", "min_max",
             DEFAULT + ["residual", "attention_scores"]))


def quantized_file(float_content: bytes, samples, mode: str, calibration: str | None,
                   groups: list[str] | None) -> bytes:
    if calibration != "moving_average":
        return convert.quantize(float_content, mode, samples, groups or [])[0]
    rules = convert.quantization_recipe(mode, groups)
    qz = quantizer.Quantizer(float_content, rules)
    by_signature: dict[str, list] = {}
    for key, feeds in samples:
        by_signature.setdefault(key, []).append(feeds)
    qsvs = qz.calibrate(by_signature, num_threads=1)
    return bytes(qz.quantize(qsvs, enable_progress_report=False).quantized_model)


def encode_ms(content: bytes, feeds: dict, runs: int = 200) -> float:
    runner = convert.make_interpreter(content, 1).get_signature_runner("encode")
    for _ in range(10):
        runner(**feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner(**feeds)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main(argv):
    del argv
    supernet = Supernet(FLAGS.config)
    supernet.restore(FLAGS.workdir)
    module = inference_model.bake_supernet(supernet, 0).module
    config = experiment.with_data_dir(FLAGS.config, FLAGS.data_dir, dev="dev.tsv")
    spm, cmvn = sources.spm_cmvn_paths(config)
    mean, std = features_lib.load_cmvn(cmvn)
    rows = read_manifest(sources.manifest_path(config, "dev"))
    rows = rows[: FLAGS.calib_utterances + FLAGS.dev_utterances]
    feats = [audio_features(r["path"], config.data, mean, std) for r in rows]
    calib, evaluate = feats[: FLAGS.calib_utterances], feats[FLAGS.calib_utterances:]
    refs = [r["text"] for r in rows[FLAGS.calib_utterances:]]
    tokenizer = Tokenizer(spm)
    samples = parity.collect_representative(module, calib)
    full_chunks = [f for n, f in samples
                   if n == "encode" and not np.any(np.all(f["features_chunk"][0] == 0, axis=-1))]
    keras_encode = module_runners(module)[0]
    reference = [keras_encode(**f)["encoder_frames"] for f in full_chunks]
    table = []
    float_content = convert.convert_module(module, "float32", sparse="never").content
    for name, mode, calibration, groups in VARIANTS:
        content = quantized_file(float_content, samples, mode, calibration, groups)
        lite = convert.make_interpreter(content, 1).get_signature_runner("encode")
        rel = np.mean([np.abs(lite(**f)["encoder_frames"] - r).mean() / np.abs(r).mean()
                       for f, r in zip(full_chunks, reference, strict=True)])
        rep = parity.run_parity(module, content, mode, evaluate, refs, tokenizer.decode)
        table.append({"variant": name, "bytes": len(content), "encoder_rel_err": float(rel),
                      "identical": f"{rep['identical_tokens']}/{rep['utterances']}",
                      "ter_vs_keras": rep["token_error_rate_vs_keras"], "wer_keras": rep["wer_keras"],
                      "wer_tflite": rep["wer_tflite"], "encode_ms": encode_ms(content, full_chunks[0])})
        print(table[-1], flush=True)
    text = bundle.markdown_table(table)
    print(text)
    if FLAGS.output:
        fileio.write_text(FLAGS.output, text)


if __name__ == "__main__":
    app.run(main)
