"""Model-free evaluation metrics: French-aware ROUGE-L, style markers, language guess, classification scores."""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections import Counter
from typing import Iterable

from dantes_mlx.dataset.split import content_words
from dantes_mlx.fr.text import fold, strip_accents

# Words (letters, digits, accented letters) with an elided clitic kept whole: "l'", "qu'", "t'".
_ELIDED = r"(?:jusqu|lorsqu|puisqu|quoiqu|presqu|qu|[cdjlmnst])['’]"
_TOKEN = re.compile(rf"{_ELIDED}|[^\W_]+", re.IGNORECASE)

# Function words frequent in one language and rare in the other (accents folded, elisions kept).
_FRENCH = frozenset("""le la les des un une et est dans que qui pour pas ne vous je il elle nous ce cette mais
avec sur au aux du mon ma mes votre son sa ses en se sont etait avait tout plus bien lui leur y ou tu
suis etes avez moi toi
c' d' j' l' m' n' qu' s' t'""".split())
_ENGLISH = frozenset("""the and is are was were in that which for not you i he she we this but with on of to my
your his her it be have has had will would what there they them an as at by from or if so do does""".split())

VOUS_FORMS = frozenset("vous votre vos".split())
TU_FORMS = frozenset("tu te t' toi ton ta tes".split())
FIRST_PERSON = frozenset("je j' me m' moi mon ma mes".split())


def tokenize_fr(text: str) -> list[str]:
    """Lower-case word tokens of French text: NFC, curly apostrophes unified, elisions split off
    ("l'homme" -> ["l'", "homme"]), hyphenated forms split ("dites-vous" -> ["dites", "vous"])."""
    text = unicodedata.normalize("NFC", text).lower().replace("’", "'")
    return _TOKEN.findall(text)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (two-row dynamic programming)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, reference: str) -> dict:
    """ROUGE-L on French word tokens: LCS precision, recall and F1 (beta = 1), as RoleBench scores role-play."""
    cand, ref = tokenize_fr(candidate), tokenize_fr(reference)
    lcs = lcs_length(cand, ref)
    if not lcs:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    precision, recall = lcs / len(cand), lcs / len(ref)
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / (precision + recall)}


def guess_language(text: str) -> str:
    """'fr', 'en' or 'unknown' (fewer than two function words, or a tie), from stop-word counts."""
    tokens = [strip_accents(t) for t in tokenize_fr(text)]
    fr = sum(t in _FRENCH for t in tokens)
    en = sum(t in _ENGLISH for t in tokens)
    if max(fr, en) < 2 or fr == en:
        return "unknown"
    return "fr" if fr > en else "en"


def address_form(text: str) -> str:
    """'vous' (vouvoiement), 'tu' (tutoiement) or 'none', whichever forms dominate the text."""
    tokens = tokenize_fr(text)
    vous = sum(t in VOUS_FORMS for t in tokens)
    tu = sum(t in TU_FORMS for t in tokens)
    if vous == tu:
        return "none"
    return "vous" if vous > tu else "tu"


def first_person_rate(text: str) -> float:
    """Share of tokens that are first-person singular pronouns or possessives (je, me, moi, mon...)."""
    tokens = tokenize_fr(text)
    return sum(t in FIRST_PERSON for t in tokens) / len(tokens) if tokens else 0.0


def citation_vocabulary(citations: Iterable[str]) -> frozenset:
    """Content words (accents folded, crude 6-letter stems) of the character's own citations."""
    return frozenset(w for text in citations for w in content_words(text))


def citation_overlap(text: str, vocabulary: frozenset) -> float | None:
    """Share of an answer's content words the character uses in the book (None: no content word)."""
    words = content_words(text)
    if not words:
        return None
    return sum(w in vocabulary for w in words) / len(words)


def word_count(text: str) -> int:
    return len(tokenize_fr(text))


def length_summary(lengths: list[int]) -> dict:
    """min, median, mean, p90 and max of a list of answer lengths (in words)."""
    if not lengths:
        return {"n": 0}
    ordered = sorted(lengths)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"n": len(ordered), "min": ordered[0], "median": statistics.median(ordered),
            "mean": statistics.fmean(ordered), "p90": p90, "max": ordered[-1]}


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def style_markers(answers: list[str], vocabulary: frozenset | None = None) -> dict:
    """Style of a set of answers: lengths, share in French, vouvoiement vs tutoiement, first-person voice,
    and (with the citations' vocabulary) lexical overlap with the character's own words."""
    n = len(answers)
    langs = Counter(guess_language(a) for a in answers)
    forms = Counter(address_form(a) for a in answers)
    lengths = [word_count(a) for a in answers]
    out = {
        "answers": n,
        "lengths": lengths,
        "length": length_summary(lengths),
        "french_share": langs["fr"] / n if n else None,
        "languages": dict(langs),
        "vous_share": forms["vous"] / n if n else None,
        "tu_share": forms["tu"] / n if n else None,
        "first_person_rate": _mean([first_person_rate(a) for a in answers]),
        "first_person_share": sum(first_person_rate(a) > 0 for a in answers) / n if n else None,
    }
    if vocabulary is not None:
        out["citation_overlap"] = _mean([citation_overlap(a, vocabulary) for a in answers])
    return out


def mean_rouge_l(candidates: list[str], references: list[str]) -> float | None:
    """Mean ROUGE-L F1 of paired candidates and references."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates for {len(references)} references")
    return _mean([rouge_l(c, r)["f1"] for c, r in zip(candidates, references)])


# ---------------------------------------------------------------- classification
OTHER = "(other)"


def _label_key(text: str) -> str:
    return fold(text, accents=False)


def normalize_label(text: str, labels: Iterable[str]) -> str:
    """The label a generated answer names: exact (case, accents, punctuation ignored), else the label the
    first line starts with, else the only label named in it; OTHER when none or several match."""
    keys = {_label_key(label): label for label in labels}
    lines = [line for line in text.strip().splitlines() if line.strip()]
    first = _label_key(lines[0]) if lines else ""
    if first in keys:
        return keys[first]
    starts = [label for key, label in keys.items() if key and first.startswith(key + " ")]
    if len(starts) == 1:
        return starts[0]
    whole = f" {_label_key(text)} "
    named = [label for key, label in keys.items() if key and f" {key} " in whole]
    return named[0] if len(named) == 1 else OTHER


def classification_metrics(gold: list[str], predicted: list[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix (rows gold, columns predicted)."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels for {len(predicted)} predictions")
    labels = sorted(set(gold))
    columns = labels + sorted(set(predicted) - set(labels))
    matrix = {g: {p: 0 for p in columns} for g in labels}
    for g, p in zip(gold, predicted):
        matrix[g][p] += 1
    per_class = {}
    for label in labels:
        tp = matrix[label][label]
        predicted_n = sum(matrix[g].get(label, 0) for g in labels)
        support = sum(matrix[label].values())
        precision = tp / predicted_n if predicted_n else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    correct = sum(g == p for g, p in zip(gold, predicted))
    return {"n": len(gold), "accuracy": correct / len(gold) if gold else None,
            "macro_f1": _mean([c["f1"] for c in per_class.values()]),
            "per_class": per_class, "labels": labels, "columns": columns, "confusion": matrix}
