"""Streaming transcription with one exported TFLite tier (LiteRT, greedy, chunk by chunk).

Usage (from the repository root; TIER = ``<export out>/<tier>`` with model.tflite, manifest.json, spm.model):
  python -m recipes.librispeech.transcribe --tier_dir=TIER --audio=x.flac,y.flac
      # prints "<path>\\t<TRANSCRIPT>" per file
  python -m recipes.librispeech.transcribe --tier_dir=TIER --librispeech_dir=LibriSpeech/dev-clean \\
      --output=hyp.txt
      # Kaldi-style "<utt_id> <TRANSCRIPT>" lines (stdout without --output), progress on stderr,
      # WER against the tree's *.trans.txt at the end (stderr)

Features: log-mel with the manifest's front-end parameters (omni_tf/data/features.py) and the manifest's CMVN.
Unreadable audio is skipped with a message naming the file and reason, and counted in the summary.
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

import omni_tf  # noqa: F401
from omni_tf import metrics
from omni_tf.data.audio import AudioError
from omni_tf.text.tokenizer import Tokenizer, check_model_vocab
from tflite_export.bundle import validate_manifest
from tflite_export.recognizer import LiteRTRecognizer, audio_features, frontend_config

FLAGS = flags.FLAGS
flags.DEFINE_string("tier_dir", None, "Exported tier directory (model.tflite, manifest.json, spm.model).")
flags.DEFINE_list("audio", [], "Audio files to transcribe (comma separated).")
flags.DEFINE_string("librispeech_dir", "", "Transcribe every utterance of this LibriSpeech-layout tree.")
flags.DEFINE_string("output", "", "Write Kaldi-style lines here (default stdout).")
flags.DEFINE_integer("num_threads", 1, "LiteRT interpreter threads.")
flags.DEFINE_integer("max_utterances", 0, "Stop after this many utterances of --librispeech_dir (0 = all).")
flags.mark_flag_as_required("tier_dir")


class TierTranscriber:
    """Audio path -> transcript through one tier (front-end + CMVN from its manifest)."""

    def __init__(self, tier_dir: str, num_threads: int = 1):
        with open(os.path.join(tier_dir, "manifest.json")) as f:
            self.manifest = json.load(f)
        validate_manifest(self.manifest)
        frontend = self.manifest["frontend"]
        self.data_config = frontend_config(frontend)
        self.mean, self.std = frontend.get("cmvn_mean"), frontend.get("cmvn_std")
        spm = os.path.join(tier_dir, self.manifest["files"].get("spm", "spm.model"))
        self.tokenizer = Tokenizer(spm)
        check_model_vocab(self.tokenizer, self.manifest["vocab_size"], f"{tier_dir}/manifest.json vocab_size")
        self.recognizer = LiteRTRecognizer.from_tier_dir(tier_dir, num_threads=num_threads)

    def __call__(self, path: str) -> str:
        feats = audio_features(path, self.data_config, self.mean, self.std)
        return self.tokenizer.decode(self.recognizer.transcribe_features(feats))


def librispeech_utterances(root: str) -> list[tuple[str, str, str]]:
    """(utt_id, audio path, reference) for every line of every ``*.trans.txt`` under ``root``, sorted."""
    items = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".trans.txt"):
                continue
            with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                for line in f:
                    utt, _, text = line.strip().partition(" ")
                    if utt:
                        items.append((utt, os.path.join(dirpath, f"{utt}.flac"), text))
    if not items:
        raise FileNotFoundError(f"{root}: no *.trans.txt transcripts found (LibriSpeech layout expected)")
    return sorted(items)


def transcribe_files(tx: TierTranscriber, paths: list[str]) -> int:
    failures = 0
    for path in paths:
        try:
            print(f"{path}\t{tx(path)}", flush=True)
        except (AudioError, OSError, ValueError) as e:
            failures += 1
            print(f"skip {path}: {e}", file=sys.stderr)
    return failures


def transcribe_tree(tx: TierTranscriber, root: str, output: str, limit: int = 0) -> dict:
    items = librispeech_utterances(root)[: limit or None]
    out = open(output, "w", encoding="utf-8") if output else sys.stdout
    refs, hyps, skipped, t0 = [], [], 0, time.time()
    try:
        for i, (utt, path, ref) in enumerate(items, 1):
            try:
                hyp = tx(path)
            except (AudioError, OSError, ValueError) as e:
                skipped += 1
                print(f"skip {utt} ({path}): {e}", file=sys.stderr)
                continue
            out.write(f"{utt} {hyp}\n")
            refs.append(ref)
            hyps.append(hyp)
            if i % 20 == 0 or i == len(items):
                print(f"[{i}/{len(items)}] {time.time() - t0:.1f}s", file=sys.stderr)
    finally:
        if output:
            out.close()
    summary = {"utterances": len(hyps), "skipped": skipped,
               "wer": metrics.wer(refs, hyps) if refs else None}
    print(f"WER {summary['wer']:.4f} on {len(hyps)} utterances ({skipped} skipped)"
          if refs else f"no utterance transcribed ({skipped} skipped)", file=sys.stderr)
    return summary


def main(argv):
    del argv
    if not FLAGS.audio and not FLAGS.librispeech_dir:
        raise app.UsageError("give --audio=FILE[,FILE] or --librispeech_dir=DIR")
    tx = TierTranscriber(FLAGS.tier_dir, FLAGS.num_threads)
    failures = transcribe_files(tx, FLAGS.audio) if FLAGS.audio else 0
    if FLAGS.librispeech_dir:
        transcribe_tree(tx, FLAGS.librispeech_dir, FLAGS.output, FLAGS.max_utterances)
    return 1 if failures else 0


if __name__ == "__main__":
    app.run(main)
