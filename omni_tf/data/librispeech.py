"""LibriSpeech-layout scan -> manifest rows, plus a report of every bad input (nothing is dropped silently).

Layout: ``<root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` with
``<speaker>-<chapter>.trans.txt`` per chapter (lines ``<utt_id> UPPER CASE WORDS``; any run of whitespace,
tabs included, separates the id and the words: ``parse_transcript_line``). A *split* is any
subdirectory of ``<root>`` holding speaker/chapter directories (``train-clean-100``, ``dev-clean``, or
``train``, ``dev``, ``test`` for the synthetic corpus); its manifest is ``<out_dir>/<split>.tsv``
(split directory name verbatim), next to ``<split>.report.json`` and ``<split>.report.txt``.

Problem kinds (``ALL_KINDS``): audio problems from ``omni_tf.data.audio`` (empty_file, corrupt, sample_rate,
channels, too_short, non_finite: a NaN/Inf sample, or NaN/Inf features found by prepare's CMVN pass) and
layout/text problems below. Unreadable directories are found by *trying* to list them
(``os.scandir``), so the check is the same for root (for whom ``os.access`` and mode bits always say yes).
With ``convert=True`` files at another rate or with
several channels are usable (``omni_tf.data.audio`` policy); each is listed under ``converted`` in the report.
A manifest row describes the file as it is on disk (``num_samples`` and ``sample_rate`` of the file).

Manifests and the reports' problem lines are TSV written by ``tsv_writer``: a tab, newline or backslash in a
field (a path) is escaped with a backslash, so every line keeps its columns (``tsv_reader`` undoes it).
"""
from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import os
import re

from omni_tf import fileio
from omni_tf.data import audio

MISSING_TRANSCRIPT = "missing_transcript"  # audio file without a transcript line
MISSING_AUDIO = "missing_audio"  # transcript line without an audio file
EMPTY_TRANSCRIPT = "empty_transcript"
BAD_CHARACTERS = "bad_characters"  # outside A-Z, apostrophe, space
DUPLICATE_ID = "duplicate_id"
BAD_NAME = "bad_name"  # id / file name does not match <speaker>-<chapter>-<utt> of its directory
UNREADABLE_DIR = "unreadable_dir"
UNREADABLE_FILE = "unreadable_file"  # transcript file that cannot be read or decoded as UTF-8
UNEXPECTED_FILE = "unexpected_file"
ALL_KINDS = (
    audio.EMPTY_FILE, audio.CORRUPT, audio.SAMPLE_RATE, audio.CHANNELS, audio.TOO_SHORT, audio.NON_FINITE,
    MISSING_TRANSCRIPT,
    MISSING_AUDIO, EMPTY_TRANSCRIPT, BAD_CHARACTERS, DUPLICATE_ID, BAD_NAME, UNREADABLE_DIR, UNREADABLE_FILE,
    UNEXPECTED_FILE)

MANIFEST_COLUMNS = ("id", "path", "num_samples", "sample_rate", "duration_s", "speaker", "text")
_ALPHABET = re.compile(r"[^A-Z' ]")


@dataclasses.dataclass(frozen=True)
class Problem:
    path: str
    kind: str
    reason: str


@dataclasses.dataclass
class SplitScan:
    """Result of ``scan_split``: usable manifest rows (sorted by id) and every problem found."""

    split: str
    split_dir: str
    rows: list[dict]
    problems: list[Problem]
    converted: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, what was done)

    def counts(self) -> dict[str, int]:
        c = collections.Counter(p.kind for p in self.problems)
        return {k: c.get(k, 0) for k in ALL_KINDS}

    @property
    def hours(self) -> float:
        return sum(r["duration_s"] for r in self.rows) / 3600.0


def default_min_duration_s(chunk_ms: float = 160, lookahead_ms: float = 40, window_ms: float = 25) -> float:
    """Shortest usable utterance: one model chunk + lookahead + one analysis window (0.225 s by default)."""
    return (chunk_ms + lookahead_ms + window_ms) / 1000.0


def check_text(text: str) -> tuple[str, str] | None:
    """(kind, reason) if a normalized transcript is unusable, else None."""
    if not text:
        return EMPTY_TRANSCRIPT, "transcript is empty"
    bad = sorted(set(_ALPHABET.findall(text)))
    if bad:
        return BAD_CHARACTERS, f"characters outside A-Z, apostrophe, space: {''.join(bad)!r} in {text!r}"
    return None


def _scandir(path: str) -> list[os.DirEntry]:
    """Lists ``path``; a seam for tests that inject OSError (root can list chmod-000 directories)."""
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: e.name)


def _is_dir(entry: os.DirEntry) -> bool:
    return entry.is_dir(follow_symlinks=True)


def find_splits(root: str) -> list[str]:
    """Names of the subdirectories of ``root`` that contain speaker/chapter directories, sorted."""
    splits = []
    for entry in _scandir(root):
        if not _is_dir(entry):
            continue
        try:
            speakers = [e for e in _scandir(entry.path) if _is_dir(e)]
            if any(_is_dir(c) for s in speakers[:3] for c in _scandir(s.path)):
                splits.append(entry.name)
        except OSError:
            splits.append(entry.name)  # let scan_split report it
    return splits


def parse_transcript_line(line: str) -> tuple[str, str]:
    """``"<utt_id><whitespace><words>"`` -> (utt_id, words joined by single spaces); ("", "") if blank."""
    parts = line.split(maxsplit=1)
    if not parts:
        return "", ""
    return parts[0], " ".join(parts[1].split()) if len(parts) > 1 else ""


def _read_transcripts(path: str, prefix: str, problems: list[Problem]) -> dict[str, str | None]:
    """Parses one ``*.trans.txt``; returns {utt_id: normalized text}, appending problems."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        problems.append(Problem(path, UNREADABLE_FILE, f"{type(e).__name__}: {e}"))
        return {}
    out: dict[str, str | None] = {}
    for lineno, line in enumerate(lines, 1):
        utt_id, text = parse_transcript_line(line)
        if not utt_id:
            continue
        where = f"{path}:{lineno}"
        if not utt_id.startswith(prefix):
            problems.append(Problem(where, BAD_NAME, f"id {utt_id!r} does not start with {prefix!r}"))
        elif utt_id in out:
            problems.append(Problem(where, DUPLICATE_ID, f"id {utt_id!r} repeated (first kept)"))
        elif bad := check_text(text):
            problems.append(Problem(where, bad[0], f"{utt_id}: {bad[1]}"))
            out[utt_id] = None  # known id, unusable text: its audio is not 'missing a transcript'
        else:
            out[utt_id] = text
    return out


def _scan_chapter(chapter_dir: str, speaker: str, chapter: str, problems: list[Problem]) -> list[dict]:
    """Pairs audio files with transcript lines in one chapter; returns rows whose audio is not yet probed."""
    try:
        entries = _scandir(chapter_dir)
    except OSError as e:
        problems.append(Problem(chapter_dir, UNREADABLE_DIR, f"{type(e).__name__}: {e}"))
        return []
    prefix = f"{speaker}-{chapter}-"
    texts: dict[str, str | None] = {}
    flacs: dict[str, str] = {}
    for e in entries:
        if e.name.endswith(".trans.txt") and not _is_dir(e):
            for utt_id, text in _read_transcripts(e.path, prefix, problems).items():
                if utt_id in texts:
                    problems.append(Problem(e.path, DUPLICATE_ID, f"id {utt_id!r} in two transcript files"))
                else:
                    texts[utt_id] = text
        elif e.name.endswith(".flac") and not _is_dir(e):
            stem = e.name[: -len(".flac")]
            if stem.startswith(prefix):
                flacs[stem] = os.path.abspath(e.path)
            else:
                problems.append(Problem(e.path, BAD_NAME, f"file name does not start with {prefix!r}"))
        else:
            problems.append(Problem(e.path, UNEXPECTED_FILE, "not a .flac or .trans.txt file"))
    rows = []
    for utt_id, path in flacs.items():
        if utt_id not in texts:
            problems.append(Problem(path, MISSING_TRANSCRIPT, f"no transcript line for {utt_id!r}"))
        elif texts[utt_id] is not None:
            rows.append({"id": utt_id, "path": path, "speaker": speaker, "text": texts[utt_id]})
    for utt_id in sorted(set(texts) - set(flacs)):
        problems.append(Problem(os.path.join(chapter_dir, utt_id + ".flac"), MISSING_AUDIO,
                                f"transcript line {utt_id!r} has no audio file"))
    return rows


def _probe_row(row: dict, sample_rate: int, min_samples: int, check: str, convert: bool) -> dict | Problem:
    try:
        info = audio.probe(row["path"], check)
        audio.check_info(row["path"], info, sample_rate, min_samples, convert)
    except audio.AudioError as e:
        return Problem(e.path, e.kind, e.reason)
    except OSError as e:
        return Problem(row["path"], UNREADABLE_FILE, f"{type(e).__name__}: {e}")
    return dict(row, num_samples=info.num_samples, sample_rate=info.sample_rate,
                duration_s=round(info.duration_s, 4), conversion=audio.conversion(info, sample_rate))


def scan_split(split_dir: str, sample_rate: int = 16000, min_duration_s: float | None = None,
               check: str = "full", num_workers: int = 2, convert: bool = False) -> SplitScan:
    """Scans one split directory; audio is probed in ``num_workers`` threads (libsndfile releases the GIL).

    ``convert``: accept audio at another rate / with several channels (converted when decoded, see
    ``omni_tf.data.audio``); such files are listed in ``SplitScan.converted``.
    """
    split_dir = os.path.abspath(split_dir)
    min_duration_s = default_min_duration_s() if min_duration_s is None else min_duration_s
    min_samples = audio.min_samples_for(min_duration_s, sample_rate)
    problems: list[Problem] = []
    candidates: list[dict] = []
    try:
        speakers = _scandir(split_dir)
    except OSError as e:
        problems.append(Problem(split_dir, UNREADABLE_DIR, f"{type(e).__name__}: {e}"))
        speakers = []
    for spk in speakers:
        if not _is_dir(spk):
            problems.append(Problem(spk.path, UNEXPECTED_FILE, "file, expected a speaker directory"))
            continue
        try:
            chapters = _scandir(spk.path)
        except OSError as e:
            problems.append(Problem(spk.path, UNREADABLE_DIR, f"{type(e).__name__}: {e}"))
            continue
        for ch in chapters:
            if not _is_dir(ch):
                problems.append(Problem(ch.path, UNEXPECTED_FILE, "file, expected a chapter directory"))
                continue
            candidates += _scan_chapter(ch.path, spk.name, ch.name, problems)
    with concurrent.futures.ThreadPoolExecutor(max(1, num_workers)) as pool:
        results = list(pool.map(lambda r: _probe_row(r, sample_rate, min_samples, check, convert),
                                candidates))
    rows, seen, converted = [], {}, []
    for r in results:
        if isinstance(r, Problem):
            problems.append(r)
        elif r["id"] in seen:
            problems.append(Problem(r["path"], DUPLICATE_ID, f"id {r['id']!r} also at {seen[r['id']]}"))
        else:
            seen[r["id"]] = r["path"]
            rows.append({k: r[k] for k in MANIFEST_COLUMNS})
            if r["conversion"]:
                converted.append((r["path"], r["conversion"]))
    rows.sort(key=lambda r: r["id"])
    problems.sort(key=lambda p: (p.path, p.kind))
    return SplitScan(os.path.basename(split_dir), split_dir, rows, problems, sorted(converted))


def tsv_writer(f):
    """csv writer of the project's TSV files: a tab, newline or backslash in a field gets a backslash."""
    return csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE, escapechar="\\")


def tsv_reader(f):
    """csv reader undoing ``tsv_writer`` (open the file with ``newline=""``)."""
    return csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")


def write_manifest(rows: list[dict], path: str) -> None:
    """Writes manifest rows as TSV with header ``MANIFEST_COLUMNS`` (atomically: whole or the old file)."""
    with fileio.atomic_write(path, "w", encoding="utf-8", newline="") as f:
        w = tsv_writer(f)
        w.writerow(MANIFEST_COLUMNS)
        for r in rows:
            w.writerow([r[k] for k in MANIFEST_COLUMNS])


def read_manifest(path: str) -> list[dict]:
    """Reads a manifest TSV; ``num_samples``/``sample_rate`` become int, ``duration_s`` float."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = tsv_reader(f)
        header = next(reader, [])
        if tuple(header) != MANIFEST_COLUMNS:
            raise ValueError(f"{path}: header {header} != {list(MANIFEST_COLUMNS)}")
        rows = []
        for lineno, fields in enumerate(reader, 2):
            if len(fields) != len(MANIFEST_COLUMNS):
                raise ValueError(f"{path}:{lineno}: {len(fields)} fields, expected {len(MANIFEST_COLUMNS)}")
            r = dict(zip(MANIFEST_COLUMNS, fields, strict=True))
            r["num_samples"], r["sample_rate"] = int(r["num_samples"]), int(r["sample_rate"])
            r["duration_s"] = float(r["duration_s"])
            rows.append(r)
    return rows


def write_report(scan: SplitScan, out_dir: str) -> tuple[str, str]:
    """Writes ``<split>.report.json`` and ``<split>.report.txt`` into ``out_dir``; returns both paths."""
    counts = scan.counts()
    report = {
        "split": scan.split, "split_dir": scan.split_dir, "usable": len(scan.rows),
        "usable_hours": round(scan.hours, 4), "bad": len(scan.problems), "counts": counts,
        "problems": [dataclasses.asdict(p) for p in scan.problems],
        "converted": [{"path": p, "conversion": c} for p, c in scan.converted],
    }
    json_path = os.path.join(out_dir, f"{scan.split}.report.json")
    txt_path = os.path.join(out_dir, f"{scan.split}.report.txt")
    fileio.write_json(json_path, report)
    with fileio.atomic_write(txt_path, "w", encoding="utf-8", newline="") as f:
        f.write(f"split {scan.split} ({scan.split_dir}): {len(scan.rows)} usable utterances, "
                f"{scan.hours:.3f} h; {len(scan.problems)} bad inputs; {len(scan.converted)} converted\n")
        for kind, n in counts.items():
            if n:
                f.write(f"  {kind}: {n}\n")
        w = tsv_writer(f)
        for p in scan.problems:
            w.writerow([p.kind, p.path, p.reason])
        for path, what in scan.converted:
            w.writerow(["converted", path, what])
    return json_path, txt_path
