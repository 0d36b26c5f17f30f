"""Prepares a LibriSpeech-layout corpus: manifests, bad-input reports and train CMVN stats per split.

Non-finite inputs are caught here, before anything is written: NaN/Inf samples by the scan (``audio.probe``)
and NaN/Inf features of train utterances by the CMVN pass; both are reported as kind ``non_finite`` and left
out of the manifest and the statistics, and ``cmvn.json`` is only written with finite statistics.

The library side of ``recipes/librispeech/prepare.py`` (which documents the command line and the policies);
``run`` is what the end-to-end recipes call in-process.

A prepared directory is whole or marked unfinished: ``run`` holds the directory's lock
(``omni_tf.fileio.DirLock``), first replaces its completion record (``COMPLETE.json``, kind ``prepared``) by
an "incomplete" one, writes every file atomically, removes a ``cmvn.json`` it did not rewrite, and writes the
record (size + SHA-256 of each manifest, report and cmvn.json, and the prepare spec) last. ``check_prepared``
(training and export call it on the manifests and cmvn.json they read) refuses a file of an unfinished prepare
or one that disagrees with the record, naming it.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

import numpy as np
from absl import logging

from omni_tf import fileio
from omni_tf.configs import data as data_config_lib
from omni_tf.configs import model as model_config_lib
from omni_tf.data import audio, features, librispeech

RECORD_KIND = "prepared"


class PrepareError(Exception):
    """The run produced nothing usable, or --strict found bad inputs."""


def check_prepared(paths: Iterable[str]) -> None:
    """Refuses (``fileio.IncompleteOutput`` naming the file) files of an unfinished or altered prepare.

    A file in a folder without a completion record (not written by ``run``) is accepted as it is.
    """
    for path in paths:
        fileio.check_member(path, RECORD_KIND)


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
    converted = f"; converted to 16 kHz mono: {len(scan.converted)}" if scan.converted else ""
    return f"{scan.split}: {len(scan.rows)} usable, {scan.hours:.2f} h; bad: {bad}{converted}"


def _train_cmvn(scans: dict[str, librispeech.SplitScan], trains: list[str], max_utterances: int
                ) -> tuple[np.ndarray, np.ndarray, int] | None:
    """CMVN over the train splits' rows; an utterance with non-finite features moves from its split's rows to
    its problems (kind ``non_finite``). None when no finite frame is left."""
    bad: dict[str, str] = {}
    rows = [r for s in trains for r in scans[s].rows]
    try:
        mean, std, frames = features.compute_cmvn_from_manifest(
            rows, data_config_lib.get_config(), max_utterances,
            on_non_finite=lambda row, reason: bad.__setitem__(row["id"], reason))
    except ValueError as e:  # zero frames: every utterance read was bad
        logging.warning("no CMVN statistics: %s", e)
        mean = std = frames = None
    for s in trains:
        scan = scans[s]
        scan.problems += [librispeech.Problem(r["path"], audio.NON_FINITE, f"features: {bad[r['id']]}")
                          for r in scan.rows if r["id"] in bad]
        scan.rows = [r for r in scan.rows if r["id"] not in bad]
        scan.problems.sort(key=lambda p: (p.path, p.kind))
    return None if mean is None else (mean, std, frames)


def run(librispeech_dir: str, out_dir: str, splits: list[str] | None = None,
        train_split: list[str] | None = None, min_duration_s: float | None = None, check: str = "full",
        num_workers: int = 2, cmvn_max_utterances: int = 0, strict: bool = False, convert_audio: bool = False,
        add_splits: bool = False) -> dict[str, librispeech.SplitScan]:
    """Writes ``<split>.tsv``, reports and ``cmvn.json`` into ``out_dir``; returns the scans.

    ``add_splits``: add these splits to a prepared ``out_dir`` (e.g. an extra test split from another
    corpus): the files of its previous prepare that this one does not rewrite (other manifests, their
    reports, ``cmvn.json``) are kept and listed in the new completion record; without it they are removed.

    ``convert_audio``: accept audio that is not 16 kHz mono (down-mixed and resampled when decoded; listed
    per file under ``converted`` in the reports) instead of reporting it as bad.
    """
    try:
        found = librispeech.find_splits(librispeech_dir)
    except OSError as e:
        raise PrepareError(f"cannot list --librispeech_dir {librispeech_dir}: {e}") from e
    splits = list(splits or found)
    unknown = sorted(set(splits) - set(found)) if splits else []
    if unknown or not splits:
        raise PrepareError(f"splits {unknown or splits} not found under {librispeech_dir} (found: {found})")
    for split in splits:  # a split name becomes <out_dir>/<split>.tsv
        try:
            fileio.check_name(split, "split name")
        except ValueError as e:
            raise PrepareError(f"{e} (choose the splits with --splits)") from e
    trains = train_splits_of(splits, list(train_split or []))
    if min_duration_s is None or min_duration_s < 0:
        min_duration_s = default_min_duration_s()
    spec = {"librispeech_dir": os.path.abspath(librispeech_dir), "splits": splits, "train_split": trains,
            "min_duration_s": min_duration_s, "check": check, "cmvn_max_utterances": cmvn_max_utterances,
            "convert_audio": convert_audio}
    with fileio.DirLock(out_dir):
        scans = _write_prepared(librispeech_dir, out_dir, splits, trains, spec, num_workers, add_splits)
    bad = [p for s in scans.values() for p in s.problems]
    if strict and bad:
        listed = "\n".join(f"  {p.kind}: {p.path}: {p.reason}" for p in bad[:50])
        more = f"\n  ... and {len(bad) - 50} more" if len(bad) > 50 else ""
        raise PrepareError(f"--strict: {len(bad)} bad inputs (reports in {out_dir}):\n{listed}{more}")
    return scans


def _write_prepared(librispeech_dir: str, out_dir: str, splits: list[str], trains: list[str], spec: dict,
                    num_workers: int, add_splits: bool = False) -> dict[str, librispeech.SplitScan]:
    previous = fileio.mark_incomplete(out_dir, RECORD_KIND, spec)
    scans = {split: librispeech.scan_split(os.path.join(librispeech_dir, split), check=spec["check"],
                                           min_duration_s=spec["min_duration_s"], num_workers=num_workers,
                                           convert=spec["convert_audio"])
             for split in splits}
    train_rows = [r for s in trains for r in scans[s].rows]
    cmvn_stats = _train_cmvn(scans, trains, spec["cmvn_max_utterances"]) if train_rows else None
    written = []
    for split, scan in scans.items():
        librispeech.write_manifest(scan.rows, os.path.join(out_dir, f"{split}.tsv"))
        written += [f"{split}.tsv", *(os.path.basename(p) for p in librispeech.write_report(scan, out_dir))]
        print(summary_line(scan), flush=True)
    if not any(s.rows for s in scans.values()):
        raise PrepareError(f"no usable utterance in {splits}; see {out_dir}/<split>.report.txt")
    cmvn = os.path.join(out_dir, "cmvn.json")
    if cmvn_stats is not None:
        mean, std, frames = cmvn_stats
        features.save_cmvn(cmvn, mean, std, num_frames=frames, splits=trains)
        written.append("cmvn.json")
        print(f"cmvn.json: {frames} frames from {trains}", flush=True)
    else:
        logging.warning("no train split among %s (or it has no usable rows): cmvn.json not written", splits)
    if add_splits:  # the previous prepare's other files stay part of the prepared set
        written += [f for f in previous if f not in written and os.path.exists(os.path.join(out_dir, f))]
    else:
        for stale in set(previous) - set(written):  # an older prepare's files do not describe this one
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(out_dir, stale))
        if "cmvn.json" not in written and os.path.exists(cmvn):
            os.remove(cmvn)
    fileio.write_record(out_dir, RECORD_KIND, spec, written)
    return scans
