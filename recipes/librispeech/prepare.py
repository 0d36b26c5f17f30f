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

Bad inputs (corrupt/empty FLAC, wrong rate (rejected, not resampled), stereo, missing transcript or audio,
empty or out-of-alphabet transcript, duplicate id, shorter than ``--min_duration_s`` (default: one 160 ms
chunk + 40 ms lookahead + 25 ms window = 0.225 s), unreadable directory) are listed per split with file and
reason. The command fails only if no usable utterance remains, or with ``--strict`` if anything was bad
(naming the files).
"""
from __future__ import annotations

import os

from absl import app, flags, logging

from omni_tf.configs import data as data_config_lib
from omni_tf.configs import model as model_config_lib
from omni_tf.data import features, librispeech

FLAGS = flags.FLAGS
flags.DEFINE_string("librispeech_dir", None, "Corpus root holding split directories.")
flags.DEFINE_string("out_dir", None, "Where manifests, reports and cmvn.json go.")
flags.DEFINE_list("splits", [], "Split directory names to scan; default: all found.")
flags.DEFINE_list("train_split", [], "Splits for CMVN; default 'train', else all 'train-*'.")
flags.DEFINE_float("min_duration_s", -1.0, "Shortest usable utterance; < 0: chunk + lookahead + window.")
flags.DEFINE_enum("check", "full", ["full", "header"], "full: decode all; header: header + last block.")
flags.DEFINE_integer("num_workers", 2, "Threads probing audio files.")
flags.DEFINE_integer("cmvn_max_utterances", 0, "Use only the first N train utterances for CMVN (0 = all).")
flags.DEFINE_bool("strict", False, "Exit non-zero if any input is bad.")
flags.mark_flags_as_required(["librispeech_dir", "out_dir"])


class PrepareError(Exception):
    """The run produced nothing usable, or --strict found bad inputs."""


def default_min_duration_s() -> float:
    m, d = model_config_lib.tiny(), data_config_lib.get_config()
    return librispeech.default_min_duration_s(m.chunk_ms, m.lookahead_ms, d.frame_length_ms)


def train_splits_of(splits: list[str], requested: list[str]) -> list[str]:
    """The CMVN splits: ``requested`` (must be scanned), else 'train', else all 'train-*'."""
    if requested:
        missing = sorted(set(requested) - set(splits))
        if missing:
            raise PrepareError(f"--train_split {missing} not among the scanned splits {splits}")
        return list(requested)
    return ["train"] if "train" in splits else [s for s in splits if s.startswith("train-")]


def summary_line(scan: librispeech.SplitScan) -> str:
    bad = ", ".join(f"{k} {n}" for k, n in scan.counts().items() if n) or "none"
    return f"{scan.split}: {len(scan.rows)} usable, {scan.hours:.2f} h; bad: {bad}"


def run(librispeech_dir: str, out_dir: str, splits: list[str] | None = None,
        train_split: list[str] | None = None, min_duration_s: float | None = None, check: str = "full",
        num_workers: int = 2, cmvn_max_utterances: int = 0, strict: bool = False
        ) -> dict[str, librispeech.SplitScan]:
    """Writes ``<split>.tsv``, reports and ``cmvn.json`` into ``out_dir``; returns the scans."""
    try:
        found = librispeech.find_splits(librispeech_dir)
    except OSError as e:
        raise PrepareError(f"cannot list --librispeech_dir {librispeech_dir}: {e}") from e
    splits = list(splits or found)
    unknown = sorted(set(splits) - set(found)) if splits else []
    if unknown or not splits:
        raise PrepareError(f"splits {unknown or splits} not found under {librispeech_dir} (found: {found})")
    trains = train_splits_of(splits, list(train_split or []))
    if min_duration_s is None or min_duration_s < 0:
        min_duration_s = default_min_duration_s()
    os.makedirs(out_dir, exist_ok=True)
    scans = {}
    for split in splits:
        scan = librispeech.scan_split(os.path.join(librispeech_dir, split), min_duration_s=min_duration_s,
                                      check=check, num_workers=num_workers)
        librispeech.write_manifest(scan.rows, os.path.join(out_dir, f"{split}.tsv"))
        librispeech.write_report(scan, out_dir)
        print(summary_line(scan), flush=True)
        scans[split] = scan
    if not any(s.rows for s in scans.values()):
        raise PrepareError(f"no usable utterance in {splits}; see {out_dir}/<split>.report.txt")
    train_rows = [r for s in trains for r in scans[s].rows]
    if train_rows:
        mean, std, frames = features.compute_cmvn_from_manifest(train_rows, data_config_lib.get_config(),
                                                                cmvn_max_utterances)
        features.save_cmvn(os.path.join(out_dir, "cmvn.json"), mean, std, num_frames=frames, splits=trains)
        print(f"cmvn.json: {frames} frames from {trains}", flush=True)
    else:
        logging.warning("no train split among %s (or it has no usable rows): cmvn.json not written", splits)
    bad = [p for s in scans.values() for p in s.problems]
    if strict and bad:
        listed = "\n".join(f"  {p.kind}: {p.path}: {p.reason}" for p in bad[:50])
        more = f"\n  ... and {len(bad) - 50} more" if len(bad) > 50 else ""
        raise PrepareError(f"--strict: {len(bad)} bad inputs (reports in {out_dir}):\n{listed}{more}")
    return scans


def main(argv: list[str]) -> None:
    del argv
    try:
        run(FLAGS.librispeech_dir, FLAGS.out_dir, FLAGS.splits, FLAGS.train_split, FLAGS.min_duration_s,
            FLAGS.check, FLAGS.num_workers, FLAGS.cmvn_max_utterances, FLAGS.strict)
    except PrepareError as e:
        raise SystemExit(f"prepare: {e}") from e


if __name__ == "__main__":
    app.run(main)
