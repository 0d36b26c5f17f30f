"""Synthetic corpus: text normalization, sentence/speaker splits, and a tiny corpus on disk."""
import collections
import hashlib
import os
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from omni_tf.data import synthetic, text_source

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")

TINY = synthetic.CorpusSpec(num_utterances=12, seed=3, dev_fraction=0.25, test_fraction=0.25)


# --- normalization ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, words", [
    (0, "ZERO"), (7, "SEVEN"), (13, "THIRTEEN"), (20, "TWENTY"), (42, "FORTY TWO"), (100, "ONE HUNDRED"),
    (105, "ONE HUNDRED FIVE"), (1984, "ONE THOUSAND NINE HUNDRED EIGHTY FOUR"),
    (2000000, "TWO MILLION"), (1010, "ONE THOUSAND TEN"),
])
def test_number_to_words(n, words):
    assert text_source.number_to_words(n) == words


def test_number_to_words_range():
    with pytest.raises(ValueError, match="number_to_words"):
        text_source.number_to_words(-1)


@pytest.mark.parametrize("n, words", [(1, "FIRST"), (2, "SECOND"), (3, "THIRD"), (12, "TWELFTH"),
                                      (20, "TWENTIETH"), (22, "TWENTY SECOND"), (100, "ONE HUNDREDTH")])
def test_ordinal_to_words(n, words):
    assert text_source.ordinal_to_words(n) == words


@pytest.mark.parametrize("text, expected", [
    ("Don't panic!", "DON'T PANIC"),
    ("'Hello,' she said.", "HELLO SHE SAID"),
    ("It's 3 o'clock.", "IT'S THREE O'CLOCK"),
    ("Rock & roll, 50% of the time.", "ROCK AND ROLL FIFTY PERCENT OF THE TIME"),
    ("He came 1st of 1,000 men", "HE CAME FIRST OF ONE THOUSAND MEN"),
    ("Pi is 3.14", "PI IS THREE POINT ONE FOUR"),
    ("Agent 007 -- licensed", "AGENT ZERO ZERO SEVEN LICENSED"),
    ("well-known   \"quotes\"", "WELL KNOWN QUOTES"),
    ("the dogs' bones", "THE DOGS BONES"),
    ("x = 1", None), ("a 3D movie", None), ("costs $5", None), ("see http://x/y", None), ("...", None),
])
def test_normalize_sentence(text, expected):
    assert text_source.normalize_sentence(text) == expected


def test_split_into_sentences():
    assert text_source.split_into_sentences("One two. \"Three?\" Four! Mr Smith") == [
        "One two.", "\"Three?", "Four!", "Mr Smith"]


def test_fortune_file_parsing(tmp_path):
    path = tmp_path / "cookies"
    path.write_text("A bird in the hand. Is worth two\nin the bush!\n\t\t-- Proverb\n%\nx = y; z\n%\n"
                    "Short one.\n%\nA bird in the hand.\n", encoding="utf-8")
    assert text_source.sentences_from_fortune_files([str(path)]) == [
        "A BIRD IN THE HAND", "IS WORTH TWO IN THE BUSH"]  # "SHORT ONE": 2 words; duplicate; code cookie


def test_embedded_sentences_are_normalized_and_unique():
    sentences = text_source.load_sentences()
    assert len(sentences) >= 4000
    assert len(set(sentences)) == len(sentences)
    for s in sentences:
        assert text_source.normalize_sentence(s) == s
        assert text_source.MIN_WORDS <= len(s.split()) <= text_source.MAX_WORDS
    assert len({w for s in sentences for w in s.split()}) <= 3000


def test_filter_common_vocabulary():
    sentences = ["A B C", "A B D", "A B C E", "A C"]
    assert text_source.filter_common_vocabulary(sentences, 3) == ["A B C", "A C"]


def test_split_disjoint_sentences_and_vocabulary():
    sentences = text_source.load_sentences()
    pools = text_source.split_disjoint(sentences, {"dev": 0.05, "test": 0.05}, seed=1)
    sets = {k: set(v) for k, v in pools.items()}
    assert not sets["train"] & sets["dev"] and not sets["train"] & sets["test"]
    assert not sets["dev"] & sets["test"]
    assert sum(map(len, sets.values())) == len(sentences)
    assert abs(len(sets["dev"]) - 0.05 * len(sentences)) <= 1
    train_words = collections.Counter(w for s in pools["train"] for w in s.split())
    for s in pools["dev"] + pools["test"]:
        assert all(train_words[w] >= 2 for w in s.split()), s
    assert pools == text_source.split_disjoint(list(reversed(sentences)), {"dev": 0.05, "test": 0.05}, seed=1)


_WORDNET = "".join(line + "  \n" for line in (  # a data.verb: licence lines, then synsets (glosses after |)
    '  1 This software and database is provided "AS IS" and Princeton makes no warranties',
    '00001740 29 v 04 breathe 0 take_a_breath 0 001 @ 00002325 v 0000 | draw air into the lungs; '
    '"I can breathe better when the air is clean"; "The patient is respiring"',
    '00002325 29 v 01 choke 0 000 | breathe with great difficulty; "She choked for a few minutes"; '
    '"Ran away"; "He was 3 years old"; "the caf\u00e9 was full of people"',
    '00002573 29 v 01 hyperventilate 0 000 | breathe hard; "I can breathe better when the air is clean"',
    '00003000 29 v 01 sigh 0 000 | heave a sigh; "a bird in the hand"; "he said x = y once"'))


def test_wordnet_examples_skip_the_licence_and_take_quoted_examples(tmp_path):
    path = tmp_path / "data.verb"
    path.write_text(_WORDNET, encoding="utf-8")
    assert text_source.wordnet_examples(str(path)) == [
        "I can breathe better when the air is clean", "The patient is respiring",
        "She choked for a few minutes", "Ran away", "He was 3 years old", "the caf\u00e9 was full of people",
        "I can breathe better when the air is clean", "a bird in the hand", "he said x = y once"]
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        text_source.wordnet_examples(str(tmp_path / "data.noun"))


def test_build_extra_sentences_normalizes_dedups_and_excludes_the_main_pool(tmp_path):
    fortunes = tmp_path / "fortunes"
    fortunes.mkdir()
    (fortunes / "wisdom").write_text("A bird in the hand. Is worth two\nin the bush!\n%\nThe caf\u00e9 is "
                                     "open today.\n%\nHe ate 2 pies at noon.\n", encoding="utf-8")
    (fortunes / "wisdom.dat").write_bytes(b"\0\1")
    (fortunes / "linux").write_text("Linux is a kernel for all.\n", encoding="utf-8")  # a _SKIP_FILES file
    wordnet = tmp_path / "data.verb"
    wordnet.write_text(_WORDNET, encoding="utf-8")
    paths = text_source.fortune_paths(str(fortunes))
    assert paths == [str(fortunes / "wisdom")]
    extra = text_source.build_extra_sentences(paths, [str(wordnet)], exclude=["IS WORTH TWO IN THE BUSH"])
    # fortunes first, then WordNet; no 2-word, non-ASCII, symbol or duplicate sentence; the main pool's out
    assert extra == ["A BIRD IN THE HAND", "HE ATE TWO PIES AT NOON",
                     "I CAN BREATHE BETTER WHEN THE AIR IS CLEAN", "THE PATIENT IS RESPIRING",
                     "SHE CHOKED FOR A FEW MINUTES", "HE WAS THREE YEARS OLD"]
    assert all(set(s) <= text_source.EXTRA_CHARS for s in extra)
    with pytest.raises(FileNotFoundError, match="fortunes"):
        text_source.fortune_paths(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="unknown argument '--bogus'"):
        text_source.main(["--extra", "--bogus"])


def test_embedded_extra_sentences_are_new_normalized_and_in_the_shipped_character_set():
    import sentencepiece as spm

    extra, main = text_source.load_extra_sentences(), set(text_source.load_sentences())
    assert len(extra) >= 40000 and len(set(extra)) == len(extra) and not main & set(extra)
    for s in extra:
        assert text_source.normalize_sentence(s) == s and set(s) <= text_source.EXTRA_CHARS, s
        assert text_source.MIN_WORDS <= len(s.split()) <= text_source.MAX_WORDS
    model = os.path.join(os.path.dirname(text_source.__file__), "..", "resources", "pretrained", "demo_tiny",
                         "spm.model")
    sp = spm.SentencePieceProcessor(model_file=model)
    assert not any(sp.unk_id() in ids for ids in sp.encode(extra))


# --- speakers and planning ----------------------------------------------------------------------------------

def test_speakers_and_split():
    speakers = synthetic.all_speakers()
    assert len(speakers) >= 8 * 50
    assert len({s.id for s in speakers}) == len(speakers)
    assert {s.voice for s in speakers} == set(synthetic.VOICES)
    by_id = {s.id: s for s in speakers}
    assert by_id[1000 + synthetic.VARIANTS.index("f1")].name == "en-us+f1"
    assert by_id[1000 + synthetic.VARIANTS.index("f1")].sex == "F"
    split = synthetic.split_speakers(speakers, synthetic.CorpusSpec(dev_fraction=0.05, test_fraction=0.05))
    ids = {k: {s.id for s in v} for k, v in split.items()}
    assert not ids["train"] & ids["dev"] and not ids["train"] & ids["test"] and not ids["dev"] & ids["test"]
    assert len(ids["dev"]) == round(0.05 * len(speakers)) and sum(map(len, ids.values())) == len(speakers)


def test_speakers_sound_different():
    """Every en-us variant, and each voice with two variants, gives distinct audio for the same utterance."""
    speakers = [s for s in synthetic.all_speakers() if s.voice == "en-us" or s.variant in ("m3", "f2")]
    digests = collections.defaultdict(list)
    for speaker in speakers:
        utt = synthetic.Utterance("x", "train", speaker, 1, "THE QUICK BROWN FOX", 170, 50, 0.0)
        digests[hashlib.md5(synthetic.synthesize(utt).tobytes()).hexdigest()].append(speaker.name)
    assert len(digests) == len(speakers), [v for v in digests.values() if len(v) > 1]


def test_plan_counts_and_hours():
    plan = synthetic.plan_corpus(synthetic.CorpusSpec(num_utterances=200, seed=0))
    assert collections.Counter(u.split for u in plan) == {"train": 180, "dev": 10, "test": 10}
    assert len({u.id for u in plan}) == 200
    assert all(120 <= u.speed <= 220 and 20 <= u.pitch <= 80 for u in plan)
    by_hours = synthetic.plan_corpus(synthetic.CorpusSpec(hours=0.5, seed=0))
    est = sum(synthetic._estimated_seconds(len(u.text.split()), u.speed) for u in by_hours) / 3600
    assert 0.4 < est < 0.6


def test_spec_validation():
    with pytest.raises(ValueError, match="fractions"):
        synthetic.CorpusSpec(dev_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match="range"):
        synthetic.CorpusSpec(min_speed=200, max_speed=150)
    with pytest.raises(ValueError, match="num_utterances"):
        synthetic.CorpusSpec(num_utterances=0)
    with pytest.raises(ValueError, match="extra_train_text=True needs within_train_of >= 0.*-1"):
        synthetic.CorpusSpec(extra_train_text=True)


def test_to_dict_names_new_fields_only_when_set():
    old_keys = {"num_utterances", "hours", "seed", "dev_fraction", "test_fraction", "min_speed", "max_speed",
                "min_pitch", "max_pitch", "min_gain_db", "max_gain_db"}  # a corpus.json from before both
    assert set(synthetic.CorpusSpec().to_dict()) == old_keys
    assert set(synthetic.CorpusSpec(within_train_of=0).to_dict()) == old_keys | {"within_train_of"}
    both = synthetic.CorpusSpec(within_train_of=0, extra_train_text=True).to_dict()
    assert set(both) == old_keys | {"within_train_of", "extra_train_text"}
    assert both["extra_train_text"] is True


def test_extra_train_text_adds_to_train_only():
    # 4500 train utterances: one full pass over the ~4230 train sentences
    plain = synthetic.CorpusSpec(num_utterances=5000, seed=2, within_train_of=0)
    spec = synthetic.CorpusSpec(num_utterances=5000, seed=2, within_train_of=0, extra_train_text=True)
    demo, _ = synthetic.split_pools(synthetic.CorpusSpec(seed=0))
    base, _ = synthetic.split_pools(plain)
    new = ["THE NEW SENTENCE IS HERE", "ANOTHER NEW ONE TOO"]
    extra = [demo["dev"][0], demo["test"][3], base["dev"][0], base["train"][0], new[0],
             "PLEASE OPEN THE KETTLE BEFORE NINE O'CLOCK", new[1]]  # the last but one: an OOD template's
    pools, _ = synthetic.split_pools(spec, extra=extra)
    assert pools["dev"] == base["dev"] and pools["test"] == base["test"]
    assert pools["train"] == base["train"] + new
    plan, before = synthetic.plan_corpus(spec, extra=extra), synthetic.plan_corpus(plain)
    assert [u for u in plan if u.split != "train"] == [u for u in before if u.split != "train"]
    assert {u.text for u in plan if u.split == "train"} == set(pools["train"])
    by_hours = synthetic.plan_corpus(synthetic.CorpusSpec(hours=0.05, seed=2, within_train_of=0,
                                                          extra_train_text=True))
    assert 40 < len(by_hours) < 400


def test_parse_wav_rejects_non_wav():
    with pytest.raises(RuntimeError, match="WAV"):
        synthetic._parse_wav(b"not a wav file at all")


# --- a tiny corpus on disk ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synth") / "a")
    synthetic.make_corpus(out, TINY, num_workers=2, log=lambda *_: None)
    return out


def _flacs(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, _, files in os.walk(root)
                  for n in files if n.endswith(".flac"))


def _transcripts(root):
    lines = {}
    for d, _, files in os.walk(root):
        for n in files:
            if n.endswith(".trans.txt"):
                speaker, chapter = n[: -len(".trans.txt")].split("-")
                assert d.endswith(os.path.join(speaker, chapter))
                with open(os.path.join(d, n), encoding="utf-8") as f:
                    for line in f:
                        uid, text = line.rstrip("\n").split(" ", 1)
                        lines[uid] = (os.path.relpath(d, root).split(os.sep)[0], text)
    return lines


def test_layout_is_librispeech(corpus):
    flacs = _flacs(corpus)
    assert len(flacs) == 12
    for rel in flacs:
        split, speaker, chapter, name = rel.split(os.sep)
        assert split in synthetic.SPLITS
        assert re.fullmatch(rf"{speaker}-{chapter}-\d{{4}}\.flac", name)
        assert speaker.isdigit() and chapter.isdigit()
    ids = {os.path.basename(r)[: -len(".flac")] for r in flacs}
    assert set(_transcripts(corpus)) == ids
    assert sorted(os.listdir(corpus)) == [".lock", "SPEAKERS.TXT", "corpus.json", "dev", "test", "train"]


def test_transcripts_upper_case_alphabet(corpus):
    for _, text in _transcripts(corpus).values():
        assert re.fullmatch(r"[A-Z']+( [A-Z']+)*", text), text
        assert 3 <= len(text.split()) <= 20


def test_audio_is_16k_mono(corpus):
    for rel in _flacs(corpus):
        info = sf.info(os.path.join(corpus, rel))
        assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16")
        audio, _ = sf.read(os.path.join(corpus, rel), dtype="float32")
        assert 0.3 < len(audio) / 16000 < 15 and 0.05 < np.max(np.abs(audio)) <= 0.91


def test_speakers_and_sentences_disjoint(corpus):
    by_split = collections.defaultdict(set)
    texts = collections.defaultdict(set)
    for rel in _flacs(corpus):
        by_split[rel.split(os.sep)[0]].add(rel.split(os.sep)[1])
    for split, text in _transcripts(corpus).values():
        texts[split].add(text)
    assert set(by_split) == set(synthetic.SPLITS)
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not by_split[a] & by_split[b] and not texts[a] & texts[b]
    with open(os.path.join(corpus, "SPEAKERS.TXT"), encoding="utf-8") as f:
        rows = [line.split("|") for line in f if not line.startswith(";")]
    assert {(r[0].strip(), r[2].strip()) for r in rows} == {(s, k) for k, v in by_split.items() for s in v}


def test_deterministic_for_seed_and_worker_count(corpus, tmp_path):
    again = str(tmp_path / "b")
    synthetic.make_corpus(again, TINY, num_workers=1, log=lambda *_: None)
    assert _flacs(again) == _flacs(corpus)
    assert _transcripts(again) == _transcripts(corpus)
    for rel in _flacs(corpus):
        a, _ = sf.read(os.path.join(corpus, rel), dtype="int16")
        b, _ = sf.read(os.path.join(again, rel), dtype="int16")
        np.testing.assert_array_equal(a, b)
        with open(os.path.join(corpus, rel), "rb") as fa, open(os.path.join(again, rel), "rb") as fb:
            assert fa.read() == fb.read(), rel


def test_other_seed_differs():
    plan_a = synthetic.plan_corpus(TINY)
    plan_b = synthetic.plan_corpus(synthetic.CorpusSpec(**{**TINY.to_dict(), "seed": 4}))
    assert [(u.text, u.speaker, u.speed) for u in plan_a] != [(u.text, u.speaker, u.speed) for u in plan_b]


def test_corpus_matches_and_reuse(corpus):
    assert synthetic.corpus_matches(corpus, TINY)
    other = synthetic.CorpusSpec(**{**TINY.to_dict(), "seed": 4})
    assert not synthetic.corpus_matches(corpus, other)
    path = os.path.join(corpus, _flacs(corpus)[0])
    mtime = os.path.getmtime(path)
    synthetic.make_corpus(corpus, TINY, log=lambda *_: None)  # reused, nothing rewritten
    assert os.path.getmtime(path) == mtime
    with pytest.raises(FileExistsError, match="overwrite"):
        synthetic.make_corpus(corpus, other, log=lambda *_: None)


def test_corpus_matches_detects_missing_audio(tmp_path):
    out = str(tmp_path / "c")
    spec = synthetic.CorpusSpec(num_utterances=3, seed=1, dev_fraction=0.0, test_fraction=0.0)
    synthetic.make_corpus(out, spec, num_workers=1, log=lambda *_: None)
    assert synthetic.corpus_matches(out, spec)
    os.remove(os.path.join(out, _flacs(out)[0]))
    assert not synthetic.corpus_matches(out, spec)
    assert synthetic.corpus_matches(str(tmp_path / "missing"), spec) is False


def test_make_corpus_command_line(tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "recipes.synthetic.make_corpus", f"--out_dir={out}", "--num_utterances=3",
           "--seed=5", "--dev_fraction=0", "--test_fraction=0", "--num_workers=1"]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    spec = synthetic.CorpusSpec(num_utterances=3, seed=5, dev_fraction=0.0, test_fraction=0.0)
    assert synthetic.corpus_matches(str(out), spec) and len(_flacs(str(out))) == 3
    clash = subprocess.run(cmd[:4] + ["--seed=6"] + cmd[5:], cwd=root, capture_output=True, text=True,
                           timeout=120)
    assert clash.returncode != 0 and "--overwrite" in clash.stderr


_KILLED_CORPUS = """
import os, signal, sys
from omni_tf.data import synthetic
real, calls = synthetic.synthesize, []
def synthesize(utt):
    calls.append(utt.id)
    if len(calls) == 5:
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 while synthesizing the fifth utterance
    return real(utt)
synthetic.synthesize = synthesize
spec = synthetic.CorpusSpec(num_utterances=12, seed=3, dev_fraction=0.25, test_fraction=0.25)
synthetic.make_corpus(sys.argv[1], spec, num_workers=1)
"""


def test_killed_corpus_resumes_with_the_same_command(corpus, tmp_path):
    import signal
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = str(tmp_path / "killed")
    done = subprocess.run([sys.executable, "-c", _KILLED_CORPUS, out], cwd=root, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert len(_flacs(out)) == 4 and not synthetic.corpus_matches(out, TINY)
    logs = []
    synthetic.make_corpus(out, TINY, num_workers=1, log=logs.append)  # the same command again
    assert "resuming: 4 of 12" in logs[0], logs
    assert synthetic.corpus_matches(out, TINY) and _flacs(out) == _flacs(corpus)
    for rel in _flacs(corpus):
        with open(os.path.join(corpus, rel), "rb") as fa, open(os.path.join(out, rel), "rb") as fb:
            assert fa.read() == fb.read(), rel
