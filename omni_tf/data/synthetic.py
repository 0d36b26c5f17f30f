"""Synthetic English speech corpus in LibriSpeech layout, spoken by espeak-ng.

Layout written under ``out_dir`` (splits ``train``, ``dev``, ``test``)::

    <split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac  16 kHz mono 16-bit FLAC
    <split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt       "<speaker>-<chapter>-<utt> UPPER WORDS"
    SPEAKERS.TXT                                                     id | sex | split | minutes | voice+var
    corpus.json                    spec; rewritten last with counts, hours and "complete": true

A speaker is an espeak-ng English voice plus a voice variant (``en-gb-scotland+klatt3``): 8 voices x 95
variants = 760 speakers (all of them sound different), with a stable numeric id
``1000 * (voice_index + 1) + variant_index``. Speakers are split disjointly: a ``dev_fraction`` share of
the shuffled speakers (at least one) is dev-only, a ``test_fraction`` share test-only, the rest train-only.
Sentences (``text_source``) are split disjointly the same way, and a dev/test sentence only uses words that
occur in training sentences. ``CorpusSpec.within_train_of`` restricts a corpus to the train speakers and
sentences of another (``split_pools``): the pretraining corpus never sees the demo's dev/test.
``CorpusSpec.extra_train_text`` (pretraining only) adds ``text_source``'s extra sentence pool to the train
split, minus the demo's dev/test sentences and anything the OOD test split can say
(``extra_train_sentences``).
Speed (words per minute), pitch and gain are drawn per utterance.
Everything is planned up front from ``seed``; the worker count does not change any file.

British English is ``en`` (``gmw/en``): ``-v en-gb+<variant>`` selects the mbrola voice ``en-uk``, which is
not installed, and every variant then gives the same audio.

Speed: 1000 utterances (0.73 h of audio) took 27.8 s and 31.7 s (two runs, 2 workers, shared 2-core machine
under load ~4-6): `make_corpus --out_dir=/tmp/synth_1k --num_utterances=1000 --seed=0`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import struct
import subprocess
import time
from collections.abc import Iterable, Sequence

import numpy as np
import scipy.signal
import soundfile as sf

from omni_tf import fileio
from omni_tf.data import text_source

CORPUS_VERSION = 2
SAMPLE_RATE = 16000
ESPEAK_RATE = 22050
SPLITS = ("train", "dev", "test")
VOICES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
          "en-us-nyc")
# Variant files of espeak-ng 1.51 (voices/!v), fixed so speaker ids are stable. Left out: whispers (no
# voicing), "fast" (a speed test preset that ignores -s), "Mr serious" (a space in its name), and "caleb" and
# "klatt6", which sound exactly like "klatt".
VARIANTS = (
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Demonic", "Denis", "Diogo", "Gene", "Gene2",
    "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen", "RicishayMax",
    "RicishayMax2", "RicishayMax3", "Storm", "Tweaky", "UniRobot", "adam", "anika", "anikaRobot", "announcer",
    "antonio", "aunty", "belinda", "benjamin", "boris", "croak", "david", "ed", "edward", "edward2",
    "f1", "f2", "f3", "f4", "f5", "grandma", "grandpa", "gustave", "iven", "iven2", "iven3", "iven4", "john",
    "kaukovalta", "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "linda", "m1", "m2", "m3", "m4",
    "m5", "m6", "m7", "m8", "marcelo", "max", "michel", "miguel", "norbert", "pablo", "paul", "pedro",
    "quincy", "rob", "robert", "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6",
    "robosoft7", "robosoft8", "sandro", "shelby", "steph", "steph2", "steph3", "travis", "victor", "zac",
)
UTTS_PER_CHAPTER = 100


@dataclasses.dataclass(frozen=True)
class CorpusSpec:
    """Everything that determines a corpus's content (``num_workers`` and ``out_dir`` do not)."""

    num_utterances: int = 1000  # total over splits; ignored when hours > 0
    hours: float = 0.0  # > 0: plan about this many hours (estimated from words and speed) instead
    seed: int = 0
    dev_fraction: float = 0.05
    test_fraction: float = 0.05
    min_speed: int = 120  # words per minute
    max_speed: int = 220
    min_pitch: int = 20  # espeak-ng -p, 0..99
    max_pitch: int = 80
    min_gain_db: float = -12.0  # peak level relative to 0.9 full scale
    max_gain_db: float = 0.0
    # >= 0: draw speakers and sentences only from the *train* pools of the corpus ``CorpusSpec(seed=
    # within_train_of)`` (default fractions: the demo's), so nothing of that corpus's dev/test is used
    # (recipes/synthetic/pretrain.py). -1: all speakers and sentences.
    within_train_of: int = -1
    # True (only with within_train_of >= 0): the extra pretraining sentences (``extra_train_sentences``) join
    # this corpus's *train* sentence pool; its dev/test stay carved from the demo-train pool.
    extra_train_text: bool = False

    def __post_init__(self) -> None:
        if self.hours <= 0 and self.num_utterances < 1:
            raise ValueError("CorpusSpec needs num_utterances >= 1 or hours > 0")
        if self.extra_train_text and self.within_train_of < 0:
            raise ValueError("CorpusSpec extra_train_text=True needs within_train_of >= 0 (the extra "
                             "sentences are for a pretraining corpus kept apart from a demo corpus), got "
                             f"within_train_of={self.within_train_of}")
        if not (0 <= self.dev_fraction < 1 and 0 <= self.test_fraction < 1
                and self.dev_fraction + self.test_fraction < 1):
            raise ValueError(f"bad split fractions dev={self.dev_fraction} test={self.test_fraction}")
        for lo, hi in ((self.min_speed, self.max_speed), (self.min_pitch, self.max_pitch),
                       (self.min_gain_db, self.max_gain_db)):
            if lo > hi:
                raise ValueError(f"CorpusSpec range {lo} > {hi}")
        if not (80 <= self.min_speed and self.max_speed <= 450
                and 0 <= self.min_pitch and self.max_pitch <= 99):
            raise ValueError("speed must be in [80, 450] wpm and pitch in [0, 99]")

    def to_dict(self) -> dict:
        """The fields; ``within_train_of`` / ``extra_train_text`` only when set, so corpora made before they
        existed still match."""
        d = dataclasses.asdict(self)
        if self.within_train_of < 0:
            del d["within_train_of"]
        if not self.extra_train_text:
            del d["extra_train_text"]
        return d


@dataclasses.dataclass(frozen=True)
class Speaker:
    id: int
    voice: str
    variant: str
    sex: str  # "M" / "F" (from the variant file; "M" when it says nothing)

    @property
    def name(self) -> str:
        return f"{self.voice}+{self.variant}"


@dataclasses.dataclass(frozen=True)
class Utterance:
    id: str  # <speaker>-<chapter>-<utt:04d>
    split: str
    speaker: Speaker
    chapter: int
    text: str  # normalized upper case
    speed: int
    pitch: int
    gain_db: float

    @property
    def relpath(self) -> str:
        return os.path.join(self.split, str(self.speaker.id), str(self.chapter), self.id + ".flac")


def espeak_data_dir() -> str:
    """The espeak-ng data directory (from ``espeak-ng --version``); clear error if espeak-ng is missing."""
    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(f"espeak-ng is not usable ({e}); install it: apt-get install -y espeak-ng") from e
    match = re.search(r"Data at:\s*(\S+)", out)
    if not match:
        raise RuntimeError(f"cannot find the data directory in `espeak-ng --version` output: {out!r}")
    return match.group(1)


@functools.lru_cache(maxsize=1)
def all_speakers() -> tuple[Speaker, ...]:
    """Every voice+variant combination whose variant file exists in the installed espeak-ng."""
    variant_dir = os.path.join(espeak_data_dir(), "voices", "!v")
    speakers = []
    for vi, voice in enumerate(VOICES):
        for ki, variant in enumerate(VARIANTS):
            path = os.path.join(variant_dir, variant)
            if not os.path.isfile(path):
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                female = re.search(r"^\s*gender\s+female", f.read(), re.MULTILINE | re.IGNORECASE)
            speakers.append(Speaker(1000 * (vi + 1) + ki, voice, variant, "F" if female else "M"))
    if not speakers:
        raise RuntimeError(f"no espeak-ng variants found in {variant_dir}")
    return tuple(speakers)


def split_speakers(speakers: Sequence[Speaker], spec: CorpusSpec) -> dict[str, list[Speaker]]:
    """Disjoint speaker sets per split; dev/test get max(1, fraction * count) speakers if fraction > 0."""
    order = sorted(speakers, key=lambda s: s.id)
    random.Random(spec.seed * 7919 + 1).shuffle(order)
    n_dev = max(1, round(spec.dev_fraction * len(order))) if spec.dev_fraction > 0 else 0
    n_test = max(1, round(spec.test_fraction * len(order))) if spec.test_fraction > 0 else 0
    if n_dev + n_test >= len(order):
        raise ValueError(f"{len(order)} speakers cannot give disjoint train/dev/test sets")
    return {"dev": order[:n_dev], "test": order[n_dev:n_dev + n_test], "train": order[n_dev + n_test:]}


def _estimated_seconds(words: float, speed: float) -> float:
    # Least-squares fit on 1000 utterances (seed 0): espeak-ng speaks ~1.5x its nominal wpm here.
    return 0.68 * words * 60.0 / speed + 0.46


def split_counts(spec: CorpusSpec, mean_words: float) -> dict[str, int]:
    """Utterances per split; with ``hours`` the total is estimated from mean words and mean speed."""
    total = spec.num_utterances
    if spec.hours > 0:
        mean_s = _estimated_seconds(mean_words, (spec.min_speed + spec.max_speed) / 2)
        total = max(1, math.ceil(spec.hours * 3600 / mean_s))
    dev = round(total * spec.dev_fraction)
    test = round(total * spec.test_fraction)
    return {"train": total - dev - test, "dev": dev, "test": test}


def _cycle(items: Sequence, rng: random.Random):
    """Yields items forever, reshuffled each pass (every item once before any repeats)."""
    while True:
        order = list(items)
        rng.shuffle(order)
        yield from order


def extra_train_sentences(held_out: Iterable[str], extra: Sequence[str] | None = None) -> list[str]:
    """The extra pretraining sentences (``extra``, default ``text_source.load_extra_sentences()``) minus every
    sentence of ``held_out`` (exact match: the demo corpus's dev/test sentence pools) and every sentence the
    OOD test split can contain (``ood.could_generate``: its templates, whatever its seed), in order."""
    from omni_tf.data import ood  # ood imports this module

    extra = text_source.load_extra_sentences() if extra is None else extra
    banned = set(held_out)
    return [s for s in extra if s not in banned and not ood.could_generate(s)]


def split_pools(spec: CorpusSpec, sentences: Sequence[str] | None = None,
                speakers: Sequence[Speaker] | None = None, extra: Sequence[str] | None = None
                ) -> tuple[dict[str, list[str]], dict[str, list[Speaker]]]:
    """({split: sentences}, {split: speakers}) of the corpus ``spec`` describes: disjoint across splits.

    With ``spec.extra_train_text`` the train pool also holds ``extra_train_sentences`` (``extra``: the extra
    pool, default the embedded one) not already in a pool, after the train sentences carved from
    ``sentences``; the dev/test pools are those without it."""
    sentences = text_source.load_sentences() if sentences is None else sentences
    speakers = all_speakers() if speakers is None else speakers
    base_pools: dict[str, list[str]] = {}
    if spec.within_train_of >= 0:
        base = CorpusSpec(seed=spec.within_train_of)
        base_pools, speaker_pools = split_pools(base, sentences, speakers)
        sentences, speakers = base_pools["train"], speaker_pools["train"]
    fractions = {"dev": spec.dev_fraction, "test": spec.test_fraction}
    pools = text_source.split_disjoint(sentences, {k: v for k, v in fractions.items() if v > 0}, spec.seed)
    if spec.extra_train_text:
        held = [s for split, pool in base_pools.items() if split != "train" for s in pool]
        own = {s for pool in pools.values() for s in pool}
        pools["train"] += [s for s in extra_train_sentences(held, extra) if s not in own]
    return pools, split_speakers(speakers, spec)


def plan_corpus(spec: CorpusSpec, sentences: Sequence[str] | None = None,
                speakers: Sequence[Speaker] | None = None, extra: Sequence[str] | None = None
                ) -> list[Utterance]:
    """The full, deterministic list of utterances for ``spec`` (nothing is synthesized); ``extra``: see
    ``split_pools``. ``hours`` is converted with the mean words of ``sentences`` (with
    ``extra_train_text``: of every sentence in the pools)."""
    sentences = text_source.load_sentences() if sentences is None else sentences
    pools, spk = split_pools(spec, sentences, speakers, extra)
    counted = [s for pool in pools.values() for s in pool] if spec.extra_train_text else sentences
    mean_words = float(np.mean([len(s.split()) for s in counted]))
    plan = []
    for si, split in enumerate(SPLITS):
        count = split_counts(spec, mean_words)[split]
        if count == 0:
            continue
        rng = random.Random(spec.seed * 1000003 + si)
        texts, voices = _cycle(pools[split], rng), _cycle(spk[split], rng)
        per_speaker: dict[int, int] = {}
        for _ in range(count):
            speaker = next(voices)
            k = per_speaker.get(speaker.id, 0)
            per_speaker[speaker.id] = k + 1
            chapter = 1 + k // UTTS_PER_CHAPTER
            plan.append(Utterance(
                id=f"{speaker.id}-{chapter}-{k % UTTS_PER_CHAPTER:04d}", split=split, speaker=speaker,
                chapter=chapter, text=next(texts), speed=rng.randint(spec.min_speed, spec.max_speed),
                pitch=rng.randint(spec.min_pitch, spec.max_pitch),
                gain_db=round(rng.uniform(spec.min_gain_db, spec.max_gain_db), 2)))
    return plan


def _parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """espeak-ng --stdout WAV (streamed: the size fields are bogus) -> (int16 samples, rate)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError(f"espeak-ng did not return WAV data ({len(data)} bytes)")
    pos, rate = 12, None
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if tag == b"fmt ":
            channels, rate, bits = (struct.unpack("<H", data[pos + 10:pos + 12])[0],
                                    struct.unpack("<I", data[pos + 12:pos + 16])[0],
                                    struct.unpack("<H", data[pos + 22:pos + 24])[0])
            if channels != 1 or bits != 16:
                raise RuntimeError(f"espeak-ng WAV: {channels} channels, {bits} bits; expected mono 16-bit")
        elif tag == b"data":
            body = data[pos + 8:]
            return np.frombuffer(body[:len(body) // 2 * 2], dtype="<i2"), rate or ESPEAK_RATE
        pos += 8 + size
    raise RuntimeError("espeak-ng WAV has no data chunk")


def synthesize(utt: Utterance) -> np.ndarray:
    """Speaks ``utt`` -> float32 [N] at 16 kHz, peak at 0.9 * gain."""
    cmd = ["espeak-ng", "-v", utt.speaker.name, "-s", str(utt.speed), "-p", str(utt.pitch), "--stdout",
           utt.text.lower()]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.decode(errors='replace')}")
    pcm, rate = _parse_wav(proc.stdout)
    if pcm.size == 0:
        raise RuntimeError(f"espeak-ng produced no audio for {utt.id} ({utt.speaker.name})")
    g = math.gcd(SAMPLE_RATE, rate)
    audio = scipy.signal.resample_poly(pcm.astype(np.float64), SAMPLE_RATE // g, rate // g)
    peak = float(np.max(np.abs(audio))) or 1.0
    return (audio * (0.9 * 10 ** (utt.gain_db / 20) / peak)).astype(np.float32)


def _render(args: tuple[Utterance, str]) -> tuple[str, int]:
    utt, out_dir = args
    path = os.path.join(out_dir, utt.relpath)
    if os.path.exists(path):  # written whole by an interrupted run of the same spec (files are atomic)
        return utt.id, int(sf.info(path).frames)
    audio = synthesize(utt)
    with fileio.atomic_write(path, "wb") as f:
        sf.write(f, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return utt.id, int(audio.shape[0])


def write_transcripts(out_dir: str, plan: Sequence[Utterance]) -> None:
    """``<speaker>-<chapter>.trans.txt`` per chapter directory of ``plan`` under ``out_dir``."""
    chapters: dict[str, list[Utterance]] = {}
    for utt in plan:
        chapters.setdefault(os.path.dirname(utt.relpath), []).append(utt)
    for rel, utts in chapters.items():
        name = f"{utts[0].speaker.id}-{utts[0].chapter}.trans.txt"
        fileio.write_text(os.path.join(out_dir, rel, name),
                          "".join(f"{u.id} {u.text}\n" for u in sorted(utts, key=lambda u: u.id)))


def _write_speakers(out_dir: str, plan: Sequence[Utterance], samples: dict[str, int]) -> None:
    minutes: dict[tuple[int, str], float] = {}
    speakers = {}
    for utt in plan:
        key = (utt.speaker.id, utt.split)
        minutes[key] = minutes.get(key, 0.0) + samples[utt.id] / SAMPLE_RATE / 60
        speakers[key] = utt.speaker
    with fileio.atomic_write(os.path.join(out_dir, "SPEAKERS.TXT"), "w") as f:
        f.write("; ID   |SEX| SUBSET | MINUTES | NAME (espeak-ng voice+variant)\n")
        for (sid, split), spk in sorted(speakers.items()):
            f.write(f"{sid:<6} | {spk.sex} | {split:<6} | {minutes[(sid, split)]:7.2f} | {spk.name}\n")


def _read_meta(out_dir: str) -> dict | None:
    try:
        with open(os.path.join(out_dir, "corpus.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def corpus_matches(out_dir: str, spec: CorpusSpec) -> bool:
    """True if ``out_dir`` holds a finished corpus made from an equal spec (and its FLAC counts agree)."""
    meta = _read_meta(out_dir)
    if meta is None or not _same_spec(meta, spec) or not meta.get("complete", True):
        return False
    for split, count in meta.get("counts", {}).items():
        found = sum(len([n for n in files if n.endswith(".flac")])
                    for _, _, files in os.walk(os.path.join(out_dir, split)))
        if found != count:
            return False
    return True


def _same_spec(meta: dict, spec: CorpusSpec) -> bool:
    return meta.get("version") == CORPUS_VERSION and meta.get("spec") == spec.to_dict()


def make_corpus(out_dir: str, spec: CorpusSpec, num_workers: int = 2, overwrite: bool = False,
                log=print) -> dict:
    """Writes the corpus for ``spec`` into ``out_dir`` (reused if ``corpus_matches``); returns corpus.json.

    Holds ``out_dir``'s lock (``omni_tf.fileio.DirLock``) throughout. ``corpus.json`` first records the spec
    as incomplete and is rewritten complete last; every file is written atomically. So a run of the same spec
    that was killed (or whose files were partly deleted) is resumed: existing FLAC files are kept and only the
    missing ones synthesized. A corpus of another spec (or files without a ``corpus.json``) is an error
    (FileExistsError) unless ``overwrite`` (then the split dirs are replaced).
    """
    with fileio.DirLock(out_dir):
        return _make_corpus(out_dir, spec, num_workers, overwrite, log)


def _make_corpus(out_dir: str, spec: CorpusSpec, num_workers: int, overwrite: bool, log) -> dict:
    if corpus_matches(out_dir, spec):
        log(f"reusing the corpus in {out_dir} (same spec)")
        return _read_meta(out_dir)
    meta = _read_meta(out_dir)
    resume = meta is not None and _same_spec(meta, spec)
    ours = (*SPLITS, "corpus.json", "SPEAKERS.TXT")
    existing = [n for n in ours if os.path.exists(os.path.join(out_dir, n))]
    if existing and not resume:
        if not overwrite:
            raise FileExistsError(f"{out_dir} already holds {existing} from another spec (or an unknown one: "
                                  "no corpus.json); pass overwrite=True (make_corpus --overwrite)")
        for name in existing:
            path = os.path.join(out_dir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    start = time.time()
    plan = plan_corpus(spec)
    fileio.write_json(os.path.join(out_dir, "corpus.json"),
                      {"version": CORPUS_VERSION, "spec": spec.to_dict(), "complete": False}, indent=2)
    have = sum(os.path.exists(os.path.join(out_dir, u.relpath)) for u in plan) if resume else 0
    log(f"synthesizing {len(plan) - have} utterances with {num_workers} workers into {out_dir}"
        + (f" (resuming: {have} of {len(plan)} already written)" if resume else ""))
    jobs = [(u, out_dir) for u in plan]
    if num_workers > 1:
        with multiprocessing.get_context("fork").Pool(num_workers) as pool:
            samples = dict(pool.imap(_render, jobs, chunksize=8))
    else:
        samples = dict(map(_render, jobs))
    write_transcripts(out_dir, plan)
    _write_speakers(out_dir, plan, samples)
    counts = {s: sum(u.split == s for u in plan) for s in SPLITS}
    seconds = {s: sum(samples[u.id] for u in plan if u.split == s) / SAMPLE_RATE for s in SPLITS}
    hours = {s: round(v / 3600, 4) for s, v in seconds.items()}
    speakers = {s: len({u.speaker.id for u in plan if u.split == s}) for s in SPLITS}
    meta = {"version": CORPUS_VERSION, "spec": spec.to_dict(), "complete": True, "counts": counts,
            "hours": hours, "speakers": speakers,
            "seconds": round(time.time() - start, 1)}
    fileio.write_json(os.path.join(out_dir, "corpus.json"), meta, indent=2)
    log(f"done in {meta['seconds']} s: counts {counts}, hours {hours}")
    return meta
