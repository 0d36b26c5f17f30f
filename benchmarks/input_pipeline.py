"""Input-pipeline throughput: FLAC decode + log-mel inside tf.data vs the float16 feature cache.

Usage:
  python -m benchmarks.input_pipeline   # makes a 400-utterance espeak-ng corpus in a temp dir
  python -m benchmarks.input_pipeline --corpus=tone --num_utterances=300
  python -m benchmarks.input_pipeline --librispeech_dir=/data/LibriSpeech --split=dev-clean

Both modes run the same training-mode ``make_dataset`` (default data config: SpecAugment on, no wave-level
augmentation, CMVN applied) over the same manifest: one warm-up epoch (tracing, OS file cache), then
``--epochs`` timed epochs. Prints utterances/s and feature frames/s per mode, the one-off cache build time and
the speed-up.
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np
from absl import app, flags

from omni_tf.configs import data as data_config_lib
from omni_tf.data import librispeech, pipeline

FLAGS = flags.FLAGS
flags.DEFINE_string("librispeech_dir", "", "Existing corpus root; empty: generate one (--corpus).")
flags.DEFINE_string("split", "train", "Split of --librispeech_dir to read.")
flags.DEFINE_enum("corpus", "espeak", ["espeak", "tone"], "Generated corpus: espeak-ng or tones.")
flags.DEFINE_integer("num_utterances", 400, "Size of the generated corpus: utterances over all splits.")
flags.DEFINE_integer("epochs", 2, "Timed epochs per mode (after one warm-up epoch).")
flags.DEFINE_string("work_dir", "", "Where corpus, manifest and cache go; default: a temp dir.")


_DIGITS = "ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE".split()


class _CharTokenizer:
    def encode(self, text: str) -> list[int]:
        return [1 + " 'ABCDEFGHIJKLMNOPQRSTUVWXYZ".find(ch) for ch in text]


def make_tone_corpus(root: str, num_utterances: int, seed: int = 0) -> str:
    """LibriSpeech-layout tree of 1-15 s tone bursts + noise under ``root/train``; returns the split dir."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    split = os.path.join(root, "train")
    for i in range(num_utterances):
        spk, ch = str(100 + i % 10), str(1000 + i % 10)
        d = os.path.join(split, spk, ch)
        os.makedirs(d, exist_ok=True)
        n = int(rng.uniform(1.0, 15.0) * 16000)
        t = np.arange(n) / 16000
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t) * (np.sin(2 * np.pi * 3 * t) > 0)
        x += 0.01 * rng.standard_normal(n)
        sf.write(os.path.join(d, f"{spk}-{ch}-{i:04d}.flac"), x.astype(np.float32), 16000)
        with open(os.path.join(d, f"{spk}-{ch}.trans.txt"), "a") as f:
            f.write(f"{spk}-{ch}-{i:04d} TONE NUMBER {_DIGITS[i % 10]}\n")
    return split


def make_corpus(work_dir: str) -> str:
    if FLAGS.librispeech_dir:
        return os.path.join(FLAGS.librispeech_dir, FLAGS.split)
    root = os.path.join(work_dir, "corpus")
    if FLAGS.corpus == "tone":
        return make_tone_corpus(root, FLAGS.num_utterances)
    from omni_tf.data import synthetic

    synthetic.make_corpus(root, synthetic.CorpusSpec(num_utterances=FLAGS.num_utterances, dev_fraction=0.0,
                                                     test_fraction=0.0), num_workers=2)
    return os.path.join(root, "train")


def time_mode(manifest: str, data_config, epochs: int) -> dict:
    """Warm-up epoch, then ``epochs`` timed epochs: utterances, frames, seconds."""
    tok = _CharTokenizer()
    for _ in pipeline.make_dataset(manifest, tok, data_config, None, training=True, epoch=0):
        pass
    utts = frames = 0
    start = time.perf_counter()
    for e in range(1, epochs + 1):
        for b in pipeline.make_dataset(manifest, tok, data_config, None, training=True, epoch=e):
            utts += int(b["feature_lengths"].shape[0])
            frames += int(b["feature_lengths"].numpy().sum())
    secs = time.perf_counter() - start
    return {"utts": utts, "frames": frames, "secs": secs, "utt_s": utts / secs, "frames_s": frames / secs}


def main(argv: list[str]) -> None:
    del argv
    work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="omni_tf_pipeline_bench_")
    t0 = time.perf_counter()
    split_dir = make_corpus(work_dir)
    scan = librispeech.scan_split(split_dir, num_workers=2)
    manifest = os.path.join(work_dir, "bench.tsv")
    librispeech.write_manifest(scan.rows, manifest)
    print(f"corpus {split_dir}: {len(scan.rows)} utterances, {scan.hours:.3f} h, {len(scan.problems)} bad "
          f"({time.perf_counter() - t0:.1f} s to make + scan)")
    if not scan.rows:
        raise SystemExit(f"no usable utterances in {split_dir}: {scan.problems[:3]}")

    cfg = data_config_lib.get_config()
    cfg.feature_cache_dir = ""
    decode = time_mode(manifest, cfg, FLAGS.epochs)
    cfg.feature_cache_dir = os.path.join(work_dir, "feature_cache")
    t0 = time.perf_counter()
    rows = librispeech.read_manifest(manifest)
    pipeline.build_feature_cache(rows, cfg, cfg.feature_cache_dir)
    build_s = time.perf_counter() - t0
    cached = time_mode(manifest, cfg, FLAGS.epochs)
    for name, r in (("decode-in-pipeline", decode), ("feature cache", cached)):
        print(f"{name:>18}: {r['utt_s']:8.1f} utt/s {r['frames_s']:10.0f} frames/s "
              f"({r['utts']} utts, {r['frames']} frames in {r['secs']:.2f} s)")
    speedup = cached["frames_s"] / decode["frames_s"]
    print(f"cache build (one-off): {build_s:.2f} s; cache speed-up: {speedup:.2f}x")


if __name__ == "__main__":
    app.run(main)
