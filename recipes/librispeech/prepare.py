"""Scans a LibriSpeech-layout corpus into manifests, bad-input reports and train CMVN stats.

Usage:
  python -m recipes.librispeech.prepare --librispeech_dir=/data/LibriSpeech --out_dir=/data/prepared
  python -m recipes.librispeech.prepare --librispeech_dir=/tmp/synth --out_dir=/tmp/synth_prepared --strict
  python -m recipes.librispeech.prepare --librispeech_dir=DIR --out_dir=OUT --splits=dev-clean,test-clean \
      --train_split=train-clean-100 --min_duration_s=0.3 --check=header --num_workers=2

Splits are the subdirectories of ``--librispeech_dir`` holding speaker/chapter directories (or
``--splits``). Each split ``S`` gives ``OUT/S.tsv`` (manifest), ``OUT/S.report.json`` and
``OUT/S.report.txt``: the synthetic corpus (``train``, ``dev``, ``test``) gives ``train.tsv``, ``dev.tsv``,
``test.tsv``; LibriSpeech gives ``train-clean-100.tsv``, ``dev-clean.tsv``, ... (several manifests go to
the pipeline as ``a.tsv,b.tsv``).
``OUT/cmvn.json`` holds global CMVN over the train splits: ``--train_split`` (comma-separated), by default the
split named ``train`` if present, else every split whose name starts with ``train-``.

Bad inputs (corrupt/empty FLAC, not 16 kHz or not mono (unless ``--convert_audio``: then down-mixed and
resampled with soxr when decoded, and listed as ``converted`` per file), missing transcript or audio,
empty or out-of-alphabet transcript, duplicate id, shorter than ``--min_duration_s`` (default: one 160 ms
chunk + 40 ms lookahead + 25 ms window = 0.225 s), unreadable directory) are listed per split with file and
reason. The command fails only if no usable utterance remains, or with ``--strict`` if anything was bad
(naming the files).
"""
from __future__ import annotations

from absl import app, flags

from omni_tf.data.prepare import PrepareError, run

FLAGS = flags.FLAGS
flags.DEFINE_string("librispeech_dir", None, "LibriSpeech-layout corpus root (split directories below it).")
flags.DEFINE_string("out_dir", None, "Where manifests, reports and cmvn.json go.")
flags.DEFINE_list("splits", [], "Split directory names to scan; default: all found.")
flags.DEFINE_list("train_split", [], "Splits for CMVN; default 'train', else all 'train-*'.")
flags.DEFINE_float("min_duration_s", -1.0, "Shortest usable utterance; < 0: chunk + lookahead + window.")
flags.DEFINE_enum("check", "full", ["full", "header"], "full: decode every file; header: header + last block")
flags.DEFINE_integer("num_workers", 2, "Threads probing audio files.")
flags.DEFINE_integer("cmvn_max_utterances", 0, "Train utterances for the global CMVN: the first N (0 = all).")
flags.DEFINE_bool("strict", False, "Exit non-zero if any input is bad.")
flags.DEFINE_bool("convert_audio", False, "Accept audio that is not 16 kHz mono: down-mix and resample it "
                  "(soxr) when decoded, listed per file in the reports; default: reject and report it.")
flags.mark_flags_as_required(["librispeech_dir", "out_dir"])


def main(argv: list[str]) -> None:
    del argv
    try:
        run(FLAGS.librispeech_dir, FLAGS.out_dir, FLAGS.splits, FLAGS.train_split, FLAGS.min_duration_s,
            FLAGS.check, FLAGS.num_workers, FLAGS.cmvn_max_utterances, FLAGS.strict, FLAGS.convert_audio)
    except PrepareError as e:
        raise SystemExit(f"prepare: {e}") from e


if __name__ == "__main__":
    app.run(main)
