"""Quality filters for generated pairs: each rejected pair gets one named reason."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rapidfuzz import fuzz

from dantes_mlx.fr.text import fold

# Reasons, in the order they are checked.
EMPTY, TOO_SHORT, TOO_LONG = "empty", "too_short", "too_long"
OUT_OF_CHARACTER, MARKUP, NARRATION = "out_of_character", "markup_leak", "third_person_narration"
COPIES_CITATION, COPIES_QUESTION, MISSING_FACT = "copies_citation", "copies_question", "fact_missing"
WRONG_LANGUAGE, DUPLICATE_QUESTION, BEYOND_K = "wrong_language", "duplicate_question", "beyond_k"

# An assistant leaking through the persona. "je ne peux pas" alone is kept out on purpose:
# the character may say "je ne peux pas oublier"; only refusal verbs after it break character.
_OUT_OF_CHARACTER = re.compile(
    r"en tant qu['’]\s*(?:ia\b|intelligence artificielle|assistant|mod[eè]le)"
    r"|mod[eè]le de (?:langue|langage)|intelligence artificielle|\b(?:une?|l['’])\s?ia\b"
    r"|je ne (?:peux|pourrai) pas (?:vous )?(?:aider|r[ée]pondre|fournir|g[ée]n[ée]rer|cr[ée]er|"
    r"acc[ée]der|continuer|donner suite|satisfaire)"
    r"|je ne suis pas en mesure de|\bchatgpt\b|\bopenai\b"
    r"|\bas an ai\b|\blanguage model\b|\bi(?: cannot|'m sorry| am sorry|'m unable)\b",
    re.IGNORECASE,
)
_MARKUP = re.compile(r"<\|[a-z_]*\|?>?|</?(?:think|commentary|analysis)\b|\[/?INST\]", re.IGNORECASE)
_SPEECH_VERBS = (r"(?:s['’](?:é|e)cri(?:a|e)|r[ée]pon(?:dit|d)|di(?:t|sait)|murmura|ajouta|reprit|"
                 r"demanda|s['’]exclama|r[ée]pliqua|continua|poursuivit)")
_STOPWORDS = {
    "fr": set("le la les des un une et est dans que qui pour pas vous je il elle nous ce cette mais "
              "avec sur au aux du ne mon ma mes votre son sa ses".split()),
    "en": set("the and is are was in that which for not you i he she we this but with on of to my "
              "your his her it be have".split()),
}


@dataclass
class FilterSettings:
    """Thresholds of the filters (from GenerateConfig)."""
    min_answer_words: int = 25
    max_answer_words: int = 220
    max_citation_similarity: float = 90.0
    duplicate_question_similarity: float = 92.0
    language: str = "fr"
    names: tuple[str, ...] = ()


def words(text: str) -> int:
    return len(text.split())


def wrong_language(text: str, language: str) -> bool:
    """Cheap check: more function words of the other language (fr/en only) than of the expected one."""
    if language not in _STOPWORDS:
        return False
    tokens = fold(text, accents=False).split()
    expected = sum(t in _STOPWORDS[language] for t in tokens)
    other = max(sum(t in _STOPWORDS[lang] for t in tokens) for lang in _STOPWORDS if lang != language)
    return other >= 3 and other > 2 * expected


def narration_pattern(names: tuple[str, ...]) -> re.Pattern:
    """'s'écria Dantès', 'répondit le comte': the book's narrator speaking inside the answer.

    'me dit-il' is left alone: the character may quote someone while telling a story.
    """
    who = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True) if n)
    return re.compile(rf"{_SPEECH_VERBS}\s+(?:{who}|le jeune homme)\b", re.IGNORECASE)


def pair_reason(instruction: str, response: str, settings: FilterSettings, *, citation: str = "",
                fact: str = "", narration: re.Pattern | None = None, ooc: bool = False) -> str | None:
    """The first reason this pair fails, or None when it is kept. `ooc` questions may name modern things
    (an AI, a language model): only the answer must stay in character."""
    if not instruction.strip() or not response.strip():
        return EMPTY
    if words(response) < settings.min_answer_words:
        return TOO_SHORT
    if settings.max_answer_words and words(response) > settings.max_answer_words:
        return TOO_LONG
    if _OUT_OF_CHARACTER.search(response) or (not ooc and _OUT_OF_CHARACTER.search(instruction)):
        return OUT_OF_CHARACTER
    if _MARKUP.search(response) or _MARKUP.search(instruction):
        return MARKUP
    if narration is not None and narration.search(response):
        return NARRATION
    answer = fold(response, accents=False)
    if citation and fuzz.ratio(answer, fold(citation, accents=False)) >= settings.max_citation_similarity:
        return COPIES_CITATION
    # A model that gives the question back as its answer (long questions get past too_short).
    if fuzz.ratio(answer, fold(instruction, accents=False)) >= settings.duplicate_question_similarity:
        return COPIES_QUESTION
    if fact and fuzz.partial_ratio(fold(fact, accents=False), answer) < 80:
        return MISSING_FACT
    if wrong_language(response, settings.language) or wrong_language(instruction, settings.language):
        return WRONG_LANGUAGE
    return None


def filter_group(pairs: list, settings: FilterSettings, *, k: int = 0, citation: str = "",
                 fact: str = "", ooc: bool = False) -> tuple[list, list[tuple[object, str]]]:
    """Kept pairs and (pair, reason) rejects for the pairs of one source item.

    `pairs` hold `.instruction` and `.response`; questions near-duplicating an earlier kept one are
    rejected, and with k > 0 only the first k good pairs are kept.
    """
    narration = narration_pattern(settings.names) if settings.names else None
    kept, rejected, questions = [], [], []
    for pair in pairs:
        reason = pair_reason(pair.instruction, pair.response, settings, citation=citation, fact=fact,
                             narration=narration, ooc=ooc)
        question = fold(pair.instruction, accents=False)
        if reason is None and any(fuzz.ratio(question, q) >= settings.duplicate_question_similarity
                                  for q in questions):
            reason = DUPLICATE_QUESTION
        if reason is None and k and len(kept) >= k:
            reason = BEYOND_K
        if reason is None:
            kept.append(pair)
            questions.append(question)
        else:
            rejected.append((pair, reason))
    return kept, rejected
