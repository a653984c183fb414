"""One text normaliser: how texts are folded before they are compared or counted (case, accents, punctuation)."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+")
_LETTERS = re.compile(r"[^\W_]+")


def strip_accents(text: str) -> str:
    """Lower-case text without diacritics (for word statistics, where 'pensée' and 'pensee' are one word)."""
    return "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))


def fold(text: str, *, accents: bool = True) -> str:
    """Lower-case words joined by single spaces: punctuation, quotes, dashes and spacing variants drop out.
    With `accents` (NFKC words, `_` kept inside a word) 'pensée' stays; without, diacritics and `_` go too."""
    if accents:
        return " ".join(_WORD.findall(unicodedata.normalize("NFKC", text).lower()))
    return " ".join(_LETTERS.findall(strip_accents(text)))


def fold_char(ch: str) -> str:
    """One character folded for matching with offsets kept: letters and digits lower-cased, anything else a space."""
    if ch.isalnum():
        return unicodedata.normalize("NFC", ch.casefold())
    return " "


def fold_name(name: str) -> str:
    """A name folded for comparison: case, accents, apostrophes, hyphens ("Monte-Cristo" -> "monte cristo")."""
    s = unicodedata.normalize("NFKD", name.replace("’", "'").replace("œ", "oe").replace("Œ", "Oe"))
    s = "".join(c for c in s if not unicodedata.combining(c)).lower()
    s = re.sub(r"[-_]", " ", s)
    s = re.sub(r"\s+", " ", re.sub(r"[^\w' ]", " ", s))
    return s.strip()
