"""Streaming transcription with one exported TFLite tier (LiteRT, greedy, chunk by chunk).

Usage (from the repository root; TIER = ``<export out>/<tier>`` with model.tflite, manifest.json, spm.model):
  python -m recipes.librispeech.transcribe --tier_dir=TIER --audio=x.flac,y.flac
      # prints "<path>\\t<TRANSCRIPT>" per file
  python -m recipes.librispeech.transcribe --tier_dir=TIER --librispeech_tree=LibriSpeech/dev-clean \\
      --output=hyp.txt
      # Kaldi-style "<utt_id> <TRANSCRIPT>" lines (stdout without --output), progress on stderr,
      # WER against the tree's *.trans.txt at the end (stderr)

Features: log-mel with the manifest's front-end parameters (omni_tf/data/features.py) and the manifest's CMVN.
Audio that is not 16 kHz mono (e.g. espeak-ng's 22.05 kHz WAV, 44.1 kHz or stereo recordings) is down-mixed
and resampled with soxr, and a "convert <path>: ..." line on stderr says so (omni_tf/data/audio.py).
Audio that cannot be used is skipped with a "skip <path>: <kind>: <reason>" line on stderr and counted per
kind in the summary: unreadable (``corrupt``), 0 samples (``empty_file``), shorter than one chunk +
lookahead + window (``too_short``; the limit ``prepare`` applies too). The exit status is 1 if nothing was
transcribed, else 0.
Audio is read in blocks and featurized, encoded and decoded chunk by chunk (``transcribe_file``), so memory
does not grow with a recording's length. A tier folder whose completion record (COMPLETE.json) is missing
or disagrees with its files is refused, naming the file.
"""
from __future__ import annotations

import collections
import os
import sys
import time

from absl import app, flags

import omni_tf  # noqa: F401
from omni_tf import metrics
from omni_tf.data import audio as audio_lib
from omni_tf.data.audio import AudioError
from omni_tf.data.librispeech import default_min_duration_s, parse_transcript_line
from omni_tf.text.tokenizer import Tokenizer, check_model_vocab
from tflite_export.bundle import read_tier, validate_manifest
from tflite_export.recognizer import LiteRTRecognizer, frontend_config

FLAGS = flags.FLAGS
flags.DEFINE_string("tier_dir", None, "Exported tier directory (model.tflite, manifest.json, spm.model).")
flags.DEFINE_list("audio", [], "Audio files to transcribe (comma separated).")
flags.DEFINE_string("librispeech_tree", "", "Transcribe every utterance of this LibriSpeech-layout tree: the "
                    "corpus root or any directory below it (e.g. one split).")
flags.DEFINE_string("output", "", "Write Kaldi-style lines here (default stdout).")
flags.DEFINE_integer("num_threads", 1, "LiteRT interpreter threads.")
flags.DEFINE_integer("max_utterances", 0, "Stop after this many utterances of --librispeech_tree (0 = all).")
flags.mark_flag_as_required("tier_dir")


class TierTranscriber:
    """Audio path -> transcript through one tier (front-end + CMVN from its manifest)."""

    def __init__(self, tier_dir: str, num_threads: int = 1):
        self.manifest = read_tier(tier_dir)  # refuses a tier folder that is not whole (COMPLETE.json)
        validate_manifest(self.manifest)
        frontend = self.manifest["frontend"]
        self.data_config = frontend_config(frontend)
        self.mean, self.std = frontend.get("cmvn_mean"), frontend.get("cmvn_std")
        spm = os.path.join(tier_dir, self.manifest["files"].get("spm", "spm.model"))
        self.tokenizer = Tokenizer(spm)
        check_model_vocab(self.tokenizer, self.manifest["vocab_size"], f"{tier_dir}/manifest.json vocab_size")
        self.recognizer = LiteRTRecognizer.from_tier_dir(tier_dir, num_threads=num_threads)
        self.min_samples = audio_lib.min_samples_for(default_min_duration_s(
            self.manifest.get("chunk_ms") or 160, self.manifest.get("lookahead_ms") or 0,
            self.data_config.frame_length_ms), self.data_config.sample_rate)

    def __call__(self, path: str) -> str:
        """Transcript of ``path``. Raises AudioError (named kind) for audio it cannot use; OSError."""
        rate = self.data_config.sample_rate
        note = audio_lib.conversion(audio_lib.read_info(path), rate)
        tokens = self.recognizer.transcribe_file(path, self.data_config, self.mean, self.std,
                                                 self.min_samples)
        if note:
            print(f"convert {path}: {note}", file=sys.stderr)
        return self.tokenizer.decode(tokens)


def _skip(skipped: collections.Counter, what: str, error: Exception) -> None:
    """Prints ``skip <what>: <kind>: <reason>`` and counts the kind (AudioError kind or exception type)."""
    if isinstance(error, AudioError):
        kind, reason = error.kind, error.reason
    else:
        kind, reason = type(error).__name__, str(error)
    skipped[kind] += 1
    print(f"skip {what}: {kind}: {reason}", file=sys.stderr)


def skip_summary(transcribed: int, skipped: collections.Counter) -> str:
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(skipped.items()))
    return f"transcribed {transcribed}, skipped {sum(skipped.values())}" + (f" ({kinds})" if kinds else "")


def librispeech_utterances(root: str) -> list[tuple[str, str, str]]:
    """(utt_id, audio path, reference) for every line of every ``*.trans.txt`` under ``root``, sorted."""
    items = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".trans.txt"):
                continue
            with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                for line in f:
                    utt, text = parse_transcript_line(line)
                    if utt:
                        items.append((utt, os.path.join(dirpath, f"{utt}.flac"), text))
    if not items:
        raise FileNotFoundError(f"{root}: no *.trans.txt transcripts found (LibriSpeech layout expected)")
    return sorted(items)


def transcribe_files(tx: TierTranscriber, paths: list[str]) -> tuple[int, collections.Counter]:
    """Prints ``<path>\t<transcript>`` per usable file; returns (transcribed, skips per kind)."""
    done, skipped = 0, collections.Counter()
    for path in paths:
        try:
            print(f"{path}\t{tx(path)}", flush=True)
            done += 1
        except (AudioError, OSError, ValueError) as e:
            _skip(skipped, path, e)
    return done, skipped


def transcribe_tree(tx: TierTranscriber, root: str, output: str, limit: int = 0) -> dict:
    items = librispeech_utterances(root)[: limit or None]
    out = open(output, "w", encoding="utf-8") if output else sys.stdout
    refs, hyps, skipped, t0 = [], [], collections.Counter(), time.time()
    try:
        for i, (utt, path, ref) in enumerate(items, 1):
            try:
                hyp = tx(path)
            except (AudioError, OSError, ValueError) as e:
                _skip(skipped, f"{utt} ({path})", e)
                continue
            out.write(f"{utt} {hyp}\n")
            refs.append(ref)
            hyps.append(hyp)
            if i % 20 == 0 or i == len(items):
                print(f"[{i}/{len(items)}] {time.time() - t0:.1f}s", file=sys.stderr)
    finally:
        if output:
            out.close()
    summary = {"utterances": len(hyps), "skipped": sum(skipped.values()), "skipped_by_kind": dict(skipped),
               "wer": metrics.wer(refs, hyps) if refs else None}
    print(f"WER {summary['wer']:.4f}; " if refs else "", skip_summary(len(hyps), skipped), sep="",
          file=sys.stderr)
    return summary


def main(argv):
    del argv
    if not FLAGS.audio and not FLAGS.librispeech_tree:
        raise app.UsageError("give --audio=FILE[,FILE] or --librispeech_tree=DIR")
    tx = TierTranscriber(FLAGS.tier_dir, FLAGS.num_threads)
    done = 0
    if FLAGS.audio:
        done, skipped = transcribe_files(tx, FLAGS.audio)
        print(skip_summary(done, skipped), file=sys.stderr)
    if FLAGS.librispeech_tree:
        done += transcribe_tree(tx, FLAGS.librispeech_tree, FLAGS.output, FLAGS.max_utterances)["utterances"]
    return 0 if done else 1


if __name__ == "__main__":
    app.run(main)
