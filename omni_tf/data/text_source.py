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
"""
from __future__ import annotations

import collections
import gzip
import os
import random
import re
from collections.abc import Iterable, Sequence

from omni_tf import fileio

RESOURCE = os.path.join(os.path.dirname(__file__), "resources", "sentences.txt.gz")
FORTUNES_DIR = "/usr/share/games/fortunes"
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


def sentences_from_fortune_files(paths: Iterable[str]) -> list[str]:
    """Normalized, deduplicated (first occurrence order) sentences of MIN_WORDS..MAX_WORDS words."""
    out: dict[str, None] = {}
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            cookies = re.split(r"\n%\n", f.read())
        for cookie in cookies:
            body = _cookie_body(cookie)
            if re.search(r"[:=<>{}\[\]|#@*/\\_]", body):  # dialogues, code, markup: skip the whole cookie
                continue
            for sentence in split_into_sentences(body):
                norm = normalize_sentence(sentence)
                if norm and MIN_WORDS <= len(norm.split()) <= MAX_WORDS:
                    out.setdefault(norm)
    return list(out)


def filter_common_vocabulary(sentences: Sequence[str], max_vocab: int) -> list[str]:
    """Keeps sentences whose words are all among the ``max_vocab`` most frequent (ties: first seen)."""
    counts = collections.Counter(w for s in sentences for w in s.split())
    common = {w for w, _ in counts.most_common(max_vocab)}
    return [s for s in sentences if all(w in common for w in s.split())]


def build_sentence_list(fortunes_dir: str = FORTUNES_DIR, max_vocab: int = 3000) -> list[str]:
    """Reads the installed fortune files and returns the filtered sentence pool (what RESOURCE holds)."""
    if not os.path.isdir(fortunes_dir):
        raise FileNotFoundError(f"{fortunes_dir} not found: install the Debian package 'fortunes'")
    names = sorted(n for n in os.listdir(fortunes_dir) if "." not in n and n not in _SKIP_FILES)
    paths = [os.path.join(fortunes_dir, n) for n in names if os.path.isfile(os.path.join(fortunes_dir, n))]
    return filter_common_vocabulary(sentences_from_fortune_files(paths), max_vocab)


def load_sentences(path: str = RESOURCE) -> list[str]:
    """The embedded sentence pool, one normalized sentence per line."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        sentences = [ln.strip() for ln in f if ln.strip()]
    if not sentences:
        raise ValueError(f"{path}: no sentences")
    return sentences


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


if __name__ == "__main__":
    pool = build_sentence_list()
    _write_resource(pool)
    vocab = {w for s in pool for w in s.split()}
    print(f"wrote {len(pool)} sentences, {len(vocab)} distinct words -> {RESOURCE}")
