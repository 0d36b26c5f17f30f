"""English sentences for the synthetic corpus: normalization and the embedded sentence list.

Source choice: Debian's ``fortunes`` package (``/usr/share/games/fortunes``; fortune-mod data, DFSG-free) is
real English prose (quotations, proverbs, jokes, literature) with ~12k distinct sentences of 3-20 words, far
more than ``fortunes-min`` (~2k). Project Gutenberg is not reachable here and no PyPI package ships comparable
prose. A small model trained ~20 minutes cannot learn a 13k-word vocabulary, so a sentence is kept only if
every word is among the ``max_vocab`` most frequent words of the pool (3000 -> 5222 sentences, 2760
distinct words, ~9 words per sentence): real sentences, common words.

The filtered list is embedded as ``resources/sentences.txt.gz`` so corpus generation needs neither the Debian
package nor network (and a package update cannot change a seed's corpus). Rebuild it (with ``fortunes``
installed: ``apt-get install -y fortunes``) by ``python -m omni_tf.data.text_source``.

Normalization (``normalize_sentence``): digits spelled out (``number_to_words``), ``&`` -> AND, ``%`` ->
PERCENT, other punctuation removed, upper case, word-internal apostrophes kept (``DON'T``, ``O'CLOCK``),
quote-like apostrophes at word edges dropped (so ``DOGS'`` -> ``DOGS``); None for text it cannot read aloud
faithfully (``3D``, ``x=1``, ``$5``).

Extra pretraining pool (``resources/extra_sentences.txt.gz``, ``load_extra_sentences``): why it exists: the
shipped dense model (``demo_tiny``) memorizes the 5222 sentences above (training loss ~0.02, test WER ~20 %),
so ``recipes/synthetic/pretrain.py --extra_text`` adds many more, more varied sentences to its corpus's
*train* split only (``synthetic.CorpusSpec.extra_train_text``; the demo corpus never uses them). Sources:
  - the full fortune files of Debian's ``fortunes`` 1:1.99.1-7.3 (same ``_SKIP_FILES`` and cookie parsing as
    above) without the common-vocabulary filter; fortune-mod data, DFSG-free;
  - the usage examples of WordNet 3.0 (Debian ``wordnet-base`` 1:3.0-37, ``data.noun/verb/adj/adv``: the
    double-quoted sentences in each synset's gloss, ``| definition; "he ran the race"``). WordNet 3.0
    licence (permissive, BSD-like: use, copy, modify and distribute for any purpose without fee, keeping the
    notice): "WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved." (George A. Miller
    (1995). WordNet: A Lexical Database for English. Communications of the ACM 38(11): 39-41.)
Each sentence is normalized as above, kept with MIN_WORDS..MAX_WORDS words, only if its source text is ASCII
(``normalize_sentence`` would drop a non-ASCII letter silently) and it uses only ``EXTRA_CHARS`` (the
characters of the shipped character SentencePiece model: no ``<unk>``), deduplicated, and dropped if it is in
the main pool (the two pools are disjoint; the main pool and every corpus without ``extra_train_text`` are
unchanged). Result: 51078 sentences (7.2 words on average; 8521 from the fortunes, the rest from WordNet),
34318 distinct words, 0.81 MB gzipped. (The main pool came from another ``fortunes`` version: this one's
filtered pool would differ, so the main resource is not rebuilt from it.) Rebuild the extra pool (with the two
packages unpacked, e.g. ``apt-get download fortunes wordnet-base`` and ``dpkg-deb -x <deb> /tmp/x``) by
``python -m omni_tf.data.text_source --extra --fortunes_dir=/tmp/x/usr/share/games/fortunes
--wordnet_dir=/tmp/x/usr/share/wordnet``.
"""
from __future__ import annotations

import collections
import gzip
import os
import random
import re
from collections.abc import Callable, Iterable, Sequence

from omni_tf import fileio

RESOURCE = os.path.join(os.path.dirname(__file__), "resources", "sentences.txt.gz")
EXTRA_RESOURCE = os.path.join(os.path.dirname(__file__), "resources", "extra_sentences.txt.gz")
FORTUNES_DIR = "/usr/share/games/fortunes"
WORDNET_DIR = "/usr/share/wordnet"
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
# The characters of the shipped character-level SentencePiece model (demo_tiny/spm.model) besides its
# control pieces: an extra sentence with any other character would tokenize to <unk>.
EXTRA_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")
# Fortune files that are mostly code, ASCII art, jargon or non-English; the rest is prose.
_SKIP_FILES = frozenset({
    "ascii-art", "computers", "debian", "disclaimer", "knghtbrd", "linux", "linuxcookie", "paradoxum", "perl",
    "startrek", "translate-me", "zippy",
})
MIN_WORDS, MAX_WORDS = 3, 20

_ONES = ("ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE THIRTEEN FOURTEEN FIFTEEN "
         "SIXTEEN SEVENTEEN EIGHTEEN NINETEEN").split()
_TENS = "_ _ TWENTY THIRTY FORTY FIFTY SIXTY SEVENTY EIGHTY NINETY".split()
_SCALES = ((10**9, "BILLION"), (10**6, "MILLION"), (1000, "THOUSAND"), (100, "HUNDRED"))
_ORDINAL_EXCEPTIONS = {"ONE": "FIRST", "TWO": "SECOND", "THREE": "THIRD", "FIVE": "FIFTH", "EIGHT": "EIGHTH",
                       "NINE": "NINTH", "TWELVE": "TWELFTH"}


def number_to_words(n: int) -> str:
    """Cardinal in upper-case words, n in [0, 1e12): 1984 -> ONE THOUSAND NINE HUNDRED EIGHTY FOUR."""
    if not 0 <= n < 10**12:
        raise ValueError(f"number_to_words supports 0 <= n < 10**12, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    for scale, name in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            words = f"{number_to_words(head)} {name}"
            return words if rest == 0 else f"{words} {number_to_words(rest)}"
    raise AssertionError("unreachable")


def ordinal_to_words(n: int) -> str:
    """Ordinal in upper-case words: 1 -> FIRST, 22 -> TWENTY SECOND, 100 -> ONE HUNDREDTH."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_EXCEPTIONS:
        words[-1] = _ORDINAL_EXCEPTIONS[last]
    elif last.endswith("Y"):
        words[-1] = last[:-1] + "IETH"
    else:
        words[-1] = last + "TH"
    return " ".join(words)


def _spell_number(match: re.Match) -> str:
    digits, frac, suffix = match.group(1).replace(",", ""), match.group(2), (match.group(3) or "").lower()
    if len(digits) > 12:
        return " @ "
    if len(digits) > 1 and digits.startswith("0"):  # "007": read digit by digit
        return " " + " ".join(_ONES[int(d)] for d in digits) + " "
    if suffix:
        if frac:
            return " @ "  # "1.5th": unreadable, poisons the sentence
        return " " + ordinal_to_words(int(digits)) + " "
    words = number_to_words(int(digits))
    if frac:
        words += " POINT " + " ".join(_ONES[int(d)] for d in frac)
    return " " + words + " "


_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(st|nd|rd|th)?(?![\w])", re.IGNORECASE)
_ALLOWED = re.compile(r"[^A-Za-z' ]")


def normalize_sentence(text: str) -> str | None:
    """One sentence -> upper-case words (letters and inner apostrophes), or None if it can't be read aloud.

    Numbers are spelled out; ``&``/``%`` become AND/PERCENT; other punctuation becomes a word break; text with
    leftover digits or symbols that carry words (``=``, ``+``, ``@``, ``#``, ``$``, ``/``) is rejected.
    """
    s = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    s = _NUMBER.sub(_spell_number, s)
    s = s.replace("&", " AND ").replace("%", " PERCENT ")
    if re.search(r"[\d=+@#$/\\<>{}\[\]|*_^~]", s):
        return None
    s = _ALLOWED.sub(" ", s)
    s = re.sub(r"(?<![A-Za-z])'+|'+(?![A-Za-z])", " ", s)  # quote marks, not contractions
    words = s.upper().split()
    return " ".join(words) if words else None


def split_into_sentences(paragraph: str) -> list[str]:
    """Splits running text on sentence-final punctuation followed by whitespace."""
    return [p for p in re.split(r"(?<=[.!?;])[\"')\]]*\s+", paragraph.strip()) if p]


def _cookie_body(cookie: str) -> str:
    """Drops attribution lines ("-- Mark Twain") and joins the remaining lines."""
    lines = [ln.strip() for ln in cookie.splitlines() if not re.match(r"^\s*-{1,2}\s*\S", ln)]
    return " ".join(ln for ln in lines if ln)


def normalize_ascii_sentence(text: str) -> str | None:
    """``normalize_sentence`` for ASCII text only (curly quotes allowed); None for other text, whose
    non-ASCII letters ``normalize_sentence`` would silently turn into word breaks (``CAFÉ`` -> ``CAF``)."""
    if re.search(r"[^\x00-\x7f\u2018\u2019]", text):
        return None
    return normalize_sentence(text)


def sentences_from_fortune_files(paths: Iterable[str],
                                 normalize: Callable[[str], str | None] = normalize_sentence) -> list[str]:
    """Normalized (``normalize``), deduplicated (first occurrence order) sentences of MIN_WORDS..MAX_WORDS
    words."""
    out: dict[str, None] = {}
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            cookies = re.split(r"\n%\n", f.read())
        for cookie in cookies:
            body = _cookie_body(cookie)
            if re.search(r"[:=<>{}\[\]|#@*/\\_]", body):  # dialogues, code, markup: skip the whole cookie
                continue
            for sentence in split_into_sentences(body):
                norm = normalize(sentence)
                if norm and MIN_WORDS <= len(norm.split()) <= MAX_WORDS:
                    out.setdefault(norm)
    return list(out)


def filter_common_vocabulary(sentences: Sequence[str], max_vocab: int) -> list[str]:
    """Keeps sentences whose words are all among the ``max_vocab`` most frequent (ties: first seen)."""
    counts = collections.Counter(w for s in sentences for w in s.split())
    common = {w for w, _ in counts.most_common(max_vocab)}
    return [s for s in sentences if all(w in common for w in s.split())]


def fortune_paths(fortunes_dir: str = FORTUNES_DIR) -> list[str]:
    """The prose fortune files of ``fortunes_dir`` (no ``.dat``/``.u8``, none of ``_SKIP_FILES``), sorted.
    Raises FileNotFoundError when the folder is missing."""
    if not os.path.isdir(fortunes_dir):
        raise FileNotFoundError(f"{fortunes_dir} not found: install the Debian package 'fortunes'")
    names = sorted(n for n in os.listdir(fortunes_dir) if "." not in n and n not in _SKIP_FILES)
    return [os.path.join(fortunes_dir, n) for n in names if os.path.isfile(os.path.join(fortunes_dir, n))]


def build_sentence_list(fortunes_dir: str = FORTUNES_DIR, max_vocab: int = 3000) -> list[str]:
    """Reads the installed fortune files and returns the filtered sentence pool (what RESOURCE holds)."""
    return filter_common_vocabulary(sentences_from_fortune_files(fortune_paths(fortunes_dir)), max_vocab)


def wordnet_examples(path: str) -> list[str]:
    """The usage examples of a WordNet 3.0 ``data.<pos>`` file, raw, in file order.

    A synset line is ``<offset> <lex_filenum> <pos> ... | <gloss>``; the gloss holds definitions and
    double-quoted examples separated by ``;`` (WordNet's wndb(5) format). Licence lines (starting with two
    spaces) have no ``|`` part after an offset and are skipped. Raises FileNotFoundError for a missing file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: unpack the Debian package 'wordnet-base'")
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not re.match(r"\d{8} ", line) or "|" not in line:
                continue
            out.extend(re.findall(r'"([^"]+)"', line.split("|", 1)[1]))
    return out


def _extra_keep(sentence: str | None) -> bool:
    return (sentence is not None and MIN_WORDS <= len(sentence.split()) <= MAX_WORDS
            and set(sentence) <= EXTRA_CHARS)


def build_extra_sentences(fortune_files: Sequence[str], wordnet_files: Sequence[str],
                          exclude: Iterable[str]) -> list[str]:
    """The extra pretraining pool (what EXTRA_RESOURCE holds): every fortune sentence of ``fortune_files``
    (``sentences_from_fortune_files``, no vocabulary filter), then every WordNet example of
    ``wordnet_files`` (``wordnet_examples``), ASCII-normalized (``normalize_ascii_sentence``), of
    MIN_WORDS..MAX_WORDS words of ``EXTRA_CHARS`` only, deduplicated (first occurrence order), none of them
    in ``exclude`` (the main pool)."""
    banned = set(exclude)
    fortunes = sentences_from_fortune_files(fortune_files, normalize_ascii_sentence)
    examples = [normalize_ascii_sentence(e) for path in wordnet_files for e in wordnet_examples(path)]
    out: dict[str, None] = {}
    for sentence in [*fortunes, *examples]:
        if _extra_keep(sentence) and sentence not in banned:
            out.setdefault(sentence)
    return list(out)


def load_sentences(path: str = RESOURCE) -> list[str]:
    """The embedded sentence pool, one normalized sentence per line."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        sentences = [ln.strip() for ln in f if ln.strip()]
    if not sentences:
        raise ValueError(f"{path}: no sentences")
    return sentences


def load_extra_sentences(path: str = EXTRA_RESOURCE) -> list[str]:
    """The embedded extra pretraining pool (module docstring), disjoint from ``load_sentences()``."""
    return load_sentences(path)


def split_disjoint(sentences: Sequence[str], fractions: dict[str, float], seed: int,
                   min_train_count: int = 2) -> dict[str, list[str]]:
    """Splits distinct sentences into disjoint pools: ``fractions`` ({"dev": .05, "test": .05}) + "train".

    A sentence goes to a held-out pool only if each of its words still occurs in >= ``min_train_count`` train
    sentences afterwards, so dev/test sentences are new but (almost) never contain a word unseen in training.
    """
    pool = sorted(set(sentences))
    random.Random(seed).shuffle(pool)
    counts = collections.Counter(w for s in pool for w in s.split())
    wanted = {name: int(round(frac * len(pool))) for name, frac in fractions.items()}
    held: dict[str, list[str]] = {name: [] for name in fractions}
    train: list[str] = []
    for sentence in pool:
        words = sentence.split()
        open_splits = [n for n in fractions if len(held[n]) < wanted[n]]
        if open_splits and all(counts[w] - words.count(w) >= min_train_count for w in set(words)):
            held[min(open_splits, key=lambda n: len(held[n]) / max(wanted[n], 1))].append(sentence)
            counts.subtract(words)
        else:
            train.append(sentence)
    for name in fractions:
        if wanted[name] and not held[name]:
            raise ValueError(f"could not fill split {name!r} from {len(pool)} sentences")
    return {"train": train, **held}


def _write_resource(sentences: Sequence[str], path: str = RESOURCE) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with (fileio.atomic_write(path, "wb") as raw,
          gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f):
        f.write(("\n".join(sentences) + "\n").encode("utf-8"))


def main(argv: Sequence[str]) -> str:
    """Rebuilds RESOURCE (no arguments) or, with ``--extra [--fortunes_dir=D] [--wordnet_dir=D]``,
    EXTRA_RESOURCE; returns a one-line summary. Raises ValueError for another argument."""
    options = {"--fortunes_dir": FORTUNES_DIR, "--wordnet_dir": WORDNET_DIR}
    extra = False
    for arg in argv:
        key, _, value = arg.partition("=")
        if arg == "--extra":
            extra = True
        elif key in options and value:
            options[key] = value
        else:
            raise ValueError(f"unknown argument {arg!r}; usage: python -m omni_tf.data.text_source "
                             "[--extra [--fortunes_dir=DIR] [--wordnet_dir=DIR]]")
    if extra:
        wordnet = [os.path.join(options["--wordnet_dir"], n) for n in WORDNET_FILES]
        pool = build_extra_sentences(fortune_paths(options["--fortunes_dir"]), wordnet, load_sentences())
        path = EXTRA_RESOURCE
    else:
        pool, path = build_sentence_list(options["--fortunes_dir"]), RESOURCE
    _write_resource(pool, path)
    vocab = {w for s in pool for w in s.split()}
    return f"wrote {len(pool)} sentences, {len(vocab)} distinct words -> {path}"


if __name__ == "__main__":
    import sys

    print(main(sys.argv[1:]))
