"""An out-of-domain synthetic test split (``test_ood``): shares nothing with training but the language.

What differs from the demo's training data (``synthetic.make_corpus``), and how it is guaranteed:
- Text: sentences from a small rule-based generator (hand-written templates and word lists below: errands,
  weather, travel, numbers spelled out), not from the fortune-file pool of ``text_source``; any generated
  sentence that occurs in that pool is dropped (``generate_sentences``). ``could_generate`` tells whether a
  sentence fits a template at all (every sentence any seed can give): the pretraining corpus's extra
  sentences (``synthetic.CorpusSpec.extra_train_text``) drop those.
- Speakers: only the speakers the demo corpus holds out from training (its dev and test speakers,
  ``synthetic.split_pools`` of the demo's ``CorpusSpec``), so no training voice+variant is heard.
- Voice settings outside the training ranges: speed from ``slow_speeds`` or ``fast_speeds`` (the demo draws
  120-220 wpm), pitch from ``low_pitches`` or ``high_pitches`` (the demo draws 20-80); ``OodSpec`` checks
  that its ranges lie outside the demo spec's.
- Channel: every ``round(1 / degraded_fraction)``-th utterance (every other one by default: half) is
  reverberated (``augment.synthetic_rir``) and then mixed with coloured noise (``augment.coloured_noise``) at
  an SNR drawn from ``snr_db``; the demo trains on clean audio.
Written in LibriSpeech layout under ``<out_dir>/test_ood/`` with ``ood.json`` (spec, counts) last, so
``prepare.run(out_dir, data_dir, splits=["test_ood"])`` makes ``<data_dir>/test_ood.tsv``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import re
from collections.abc import Sequence

import numpy as np
import soundfile as sf
import tensorflow as tf

from omni_tf import fileio
from omni_tf.data import augment, synthetic, text_source

OOD_SPLIT = "test_ood"
OOD_VERSION = 1

_NAMES = "ANNA BORIS CARLA DMITRI ELENA FELIX GRETA HUGO IRIS JONAS KARIM LUCIA MARTA NIKO OLGA PABLO".split()
_OBJECTS = ("UMBRELLA", "BICYCLE", "KETTLE", "BLANKET", "PARCEL", "LADDER", "CAMERA", "WALLET", "TICKET",
            "LANTERN", "BASKET", "HELMET", "NOTEBOOK", "SUITCASE", "TELESCOPE", "PILLOW")
_PLACES = ("THE STATION", "THE HARBOUR", "THE BAKERY", "THE LIBRARY", "THE MARKET", "THE GARAGE",
           "THE MUSEUM", "THE PHARMACY", "THE AIRPORT", "THE STADIUM", "THE POST OFFICE",
           "THE VILLAGE SQUARE")
_COLOURS = "RED GREEN BLUE YELLOW ORANGE PURPLE SILVER GOLDEN BROWN GREY".split()
_DAYS = "MONDAY TUESDAY WEDNESDAY THURSDAY FRIDAY SATURDAY SUNDAY".split()
_WEATHER = ("RAIN", "SNOW", "FOG", "WIND", "SUNSHINE", "THUNDER", "HAIL", "FROST")
_VERBS_PAST = ("CARRIED", "REPAIRED", "PAINTED", "BORROWED", "DELIVERED", "PACKED", "CLEANED", "FOUND",
               "DROPPED", "WRAPPED", "SOLD", "MOVED")
_VERBS = ("BRING", "CHECK", "COLLECT", "RETURN", "OPEN", "WEIGH", "LABEL", "CARRY", "FIX", "MEASURE")
_UNITS = ("KILOMETRES", "MINUTES", "EUROS", "LITRES", "BOXES", "FLOORS", "HOURS", "STEPS")

_TEMPLATES = (
    "{name} {verb_past} THE {colour} {obj} TO {place} ON {day}",
    "PLEASE {verb} THE {obj} BEFORE {number} O'CLOCK",
    "THE FORECAST FOR {day} SAYS {weather} NEAR {place}",
    "{name} WALKED {number} {unit} FROM {place} TO {place2}",
    "DID YOU {verb} THE {colour} {obj} AT {place}",
    "WE NEED {number} {unit} AND ONE {obj} FOR {name}",
    "ON {day} THE {weather} CLOSED {place} FOR {number} {unit}",
    "{name} AND {name2} {verb_past} A {colour} {obj} NEAR {place}",
)

_NUMBERS = (2, 12)  # {number}: a cardinal in this range, spelled out
_FIELDS = {"name": _NAMES, "name2": _NAMES, "obj": _OBJECTS, "place": _PLACES, "place2": _PLACES,
           "colour": _COLOURS, "day": _DAYS, "weather": _WEATHER, "verb_past": _VERBS_PAST, "verb": _VERBS,
           "unit": _UNITS,
           "number": tuple(text_source.number_to_words(n) for n in range(_NUMBERS[0], _NUMBERS[1] + 1))}


def _template_regex(template: str) -> str:
    parts = re.split(r"\{(\w+)\}", template)  # literal, field, literal, ...
    return "".join(re.escape(p) if i % 2 == 0 else "(?:" + "|".join(map(re.escape, _FIELDS[p])) + ")"
                   for i, p in enumerate(parts))


_ANY_TEMPLATE = re.compile("|".join(f"(?:{_template_regex(t)})" for t in _TEMPLATES))


def could_generate(sentence: str) -> bool:
    """Whether ``generate_sentences`` (any seed, any count) can give the normalized ``sentence``: it fills a
    template with words of the lists (a superset: two names or places of one sentence may coincide here)."""
    return _ANY_TEMPLATE.fullmatch(sentence) is not None


def generate_sentences(count: int, seed: int, exclude: Sequence[str] = ()) -> list[str]:
    """``count`` distinct upper-case sentences from the templates, none of them in ``exclude``.

    Raises ValueError if the templates cannot give ``count`` distinct sentences.
    """
    rng = random.Random(seed)
    banned, out, seen = set(exclude), [], set()
    for _ in range(50 * count + 100):
        if len(out) == count:
            break
        place, place2 = rng.sample(_PLACES, 2)
        name, name2 = rng.sample(_NAMES, 2)
        sentence = rng.choice(_TEMPLATES).format(
            name=name, name2=name2, obj=rng.choice(_OBJECTS), place=place, place2=place2,
            colour=rng.choice(_COLOURS), day=rng.choice(_DAYS), weather=rng.choice(_WEATHER),
            verb_past=rng.choice(_VERBS_PAST), verb=rng.choice(_VERBS), unit=rng.choice(_UNITS),
            number=text_source.number_to_words(rng.randint(*_NUMBERS)))
        norm = text_source.normalize_sentence(sentence)
        if norm and norm not in banned and norm not in seen:
            seen.add(norm)
            out.append(norm)
    if len(out) < count:
        raise ValueError(f"the OOD templates gave only {len(out)} distinct sentences, {count} wanted")
    return out


@dataclasses.dataclass(frozen=True)
class OodSpec:
    """Everything that determines the OOD split. ``demo``: the training corpus it must stay apart from."""

    num_utterances: int = 200
    seed: int = 0
    demo: synthetic.CorpusSpec = dataclasses.field(default_factory=synthetic.CorpusSpec)
    slow_speeds: tuple[int, int] = (90, 110)  # words per minute
    fast_speeds: tuple[int, int] = (240, 290)
    low_pitches: tuple[int, int] = (0, 12)
    high_pitches: tuple[int, int] = (88, 99)
    degraded_fraction: float = 0.5  # reverberation + noise
    snr_db: tuple[float, float] = (5.0, 15.0)
    rt60_s: tuple[float, float] = (0.3, 0.9)
    drr_db: tuple[float, float] = (0.0, 6.0)

    def __post_init__(self) -> None:
        d = self.demo
        if self.num_utterances < 1 or not 0.0 <= self.degraded_fraction <= 1.0:
            raise ValueError("OodSpec needs num_utterances >= 1 and 0 <= degraded_fraction <= 1")
        if not (self.slow_speeds[1] < d.min_speed and self.fast_speeds[0] > d.max_speed
                and self.low_pitches[1] < d.min_pitch and self.high_pitches[0] > d.max_pitch):
            raise ValueError(f"OOD speeds/pitches must lie outside the training ranges "
                             f"({d.min_speed}-{d.max_speed} wpm, pitch {d.min_pitch}-{d.max_pitch})")

    def to_dict(self) -> dict:
        """JSON-ready fields (tuples as lists), comparable with a loaded ``ood.json``."""
        return json.loads(json.dumps({**dataclasses.asdict(self), "demo": self.demo.to_dict()}))


@dataclasses.dataclass(frozen=True)
class OodUtterance:
    utterance: synthetic.Utterance
    degraded: bool


def plan_ood(spec: OodSpec) -> list[OodUtterance]:
    """The deterministic list of OOD utterances (nothing is synthesized)."""
    pool = text_source.load_sentences()
    sentences = generate_sentences(spec.num_utterances, spec.seed, exclude=pool)
    _, speaker_pools = synthetic.split_pools(spec.demo, pool)
    speakers = sorted(speaker_pools["dev"] + speaker_pools["test"], key=lambda s: s.id)
    rng = random.Random(spec.seed * 31337 + 5)
    every = round(1 / spec.degraded_fraction) if spec.degraded_fraction > 0 else 0
    plan, per_speaker = [], {}
    for i, text in enumerate(sentences):
        speaker = speakers[i % len(speakers)]
        k = per_speaker.get(speaker.id, 0)
        per_speaker[speaker.id] = k + 1
        chapter = 1 + k // synthetic.UTTS_PER_CHAPTER
        speed = rng.randint(*(spec.slow_speeds if rng.random() < 0.5 else spec.fast_speeds))
        pitch = rng.randint(*(spec.low_pitches if rng.random() < 0.5 else spec.high_pitches))
        utt = synthetic.Utterance(
            id=f"{speaker.id}-{chapter}-{k % synthetic.UTTS_PER_CHAPTER:04d}", split=OOD_SPLIT,
            speaker=speaker, chapter=chapter, text=text, speed=speed, pitch=pitch,
            gain_db=round(rng.uniform(spec.demo.min_gain_db, spec.demo.max_gain_db), 2))
        plan.append(OodUtterance(utt, degraded=every > 0 and i % every == 0))
    return plan


def degrade(audio: np.ndarray, spec: OodSpec, index: int) -> np.ndarray:
    """Reverberation then coloured noise on [N] float32 audio (stateless seed ``(spec.seed, index)``)."""
    seed = tf.constant([spec.seed, index], tf.int64)
    draw = tf.random.stateless_uniform([4], seed, dtype=tf.float32).numpy()
    rt60 = spec.rt60_s[0] + draw[0] * (spec.rt60_s[1] - spec.rt60_s[0])
    drr = spec.drr_db[0] + draw[1] * (spec.drr_db[1] - spec.drr_db[0])
    snr = spec.snr_db[0] + draw[2] * (spec.snr_db[1] - spec.snr_db[0])
    wet = augment.reverberate(audio, augment.synthetic_rir(seed + 1, rt60, drr, synthetic.SAMPLE_RATE))
    noise = augment.coloured_noise(tf.shape(wet)[0], 2.0 * draw[3], seed + 2)
    out = augment.add_noise(wet, noise, snr).numpy()
    peak = float(np.max(np.abs(out))) or 1.0
    return (out * min(1.0, 0.99 / peak)).astype(np.float32)


def make_ood_split(out_dir: str, spec: OodSpec, log=print) -> dict:
    """Writes ``<out_dir>/test_ood`` (+ transcripts) and ``ood.json``; reused when ``ood.json`` has the same
    spec. Returns the ``ood.json`` content (spec, counts, degraded count, hours)."""
    meta_path = os.path.join(out_dir, "ood.json")
    if os.path.exists(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("version") == OOD_VERSION and meta.get("spec") == spec.to_dict():
            log(f"reusing the OOD split in {out_dir} (same spec)")
            return meta
    plan = plan_ood(spec)
    seconds = 0.0
    for i, item in enumerate(plan):
        audio = synthetic.synthesize(item.utterance)
        if item.degraded:
            audio = degrade(audio, spec, i)
        path = os.path.join(out_dir, item.utterance.relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with fileio.atomic_write(path, "wb") as f:
            sf.write(f, audio, synthetic.SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        seconds += audio.shape[0] / synthetic.SAMPLE_RATE
    synthetic.write_transcripts(out_dir, [p.utterance for p in plan])
    meta = {"version": OOD_VERSION, "spec": spec.to_dict(), "counts": {OOD_SPLIT: len(plan)},
            "degraded": sum(p.degraded for p in plan), "hours": round(seconds / 3600, 4)}
    fileio.write_json(meta_path, meta, indent=2)
    log(f"OOD split: {len(plan)} utterances ({meta['degraded']} with reverberation + noise) in {out_dir}")
    return meta
