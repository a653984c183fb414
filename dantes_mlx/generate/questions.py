"""generate.answers: citation — the LLM writes only the questions; each answer is the character's own words.

For a small generator (the embedded 135M model) that cannot write a developed answer in the character's voice
but can ask a question: the pair is (question, authentic reply), so no word of the answer is invented. The
questions pass their own gates (filters.question_reason) and every reject is kept with its reason.
"""

from __future__ import annotations

import json
import re

from dantes_mlx.generate.parser import ParsedPair

# The reply markers the book opens speech with, which are not the character's words.
_MARKER = re.compile(r"^\s*(?:--|—|–|«|-)\s*")
_CLOSE = re.compile(r"\s*»\s*$")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.){3,}?\?)\s*"')
# How a question opens, per language: the grammar makes even a 135M model write a question ending in "?",
# instead of copying the reply (what SmolLM2 did in 30 of 37 answers without it).
OPENINGS = {
    "fr": ("Qu'", "Que ", "Qui ", "Quel", "Pourquoi ", "Comment ", "Où ", "Quand ", "Combien ", "Avez-vous ",
           "Êtes-vous ", "Pouvez-vous ", "Croyez-vous ", "Est-ce "),
    "en": ("What ", "Who ", "Why ", "How ", "Where ", "When ", "Which ", "Do you ", "Did you ", "Are you ",
           "Have you ", "Can you ", "Would you "),
}


def question_pattern(language: str, max_chars: int = 0) -> str | None:
    """A regular expression a question must match: a known opening, then words, then "?" (None: any text)."""
    openings = OPENINGS.get(language)
    if not openings:
        return None
    body = max(12, min(max_chars or 110, 300) - 12)
    return "^(" + "|".join(openings) + r")[^\"?\\\n]{6," + str(body) + r"}\?$"


def questions_schema(k: int, max_chars: int = 0, language: str = "") -> dict:
    """Exactly k non-empty questions under "questions", in the language's question form when it has one."""
    pattern = question_pattern(language, max_chars)
    item = {"type": "string", "minLength": 1, **({"maxLength": max_chars} if max_chars and not pattern else {}),
            **({"pattern": pattern} if pattern else {})}
    return {"title": "questions", "type": "object",
            "properties": {"questions": {"type": "array", "items": item, "minItems": k, "maxItems": k}},
            "required": ["questions"], "additionalProperties": False}


def spoken_text(citation: str) -> str:
    """The citation as the character says it: the book's opening reply marker and closing guillemet removed."""
    return _CLOSE.sub("", _MARKER.sub("", citation.strip())).strip()


def parse_questions(text: str) -> tuple[list[str], str]:
    """The questions of one answer, and what went wrong ("" when the JSON was whole). A cut or broken object
    still gives the questions it holds whole (quoted strings ending in '?')."""
    try:
        value = json.loads(text)
        items = value.get("questions") if isinstance(value, dict) else None
        if isinstance(items, list) and all(isinstance(q, str) for q in items):
            return [q.strip() for q in items], ""
        problem = "no list of strings under \"questions\""
    except json.JSONDecodeError as exc:
        problem = f"not JSON ({exc.msg} at character {exc.pos})"
    return [json.loads(f'"{m}"').strip() for m in _QUOTED.findall(text)], problem


def question_pairs(text: str, citation: str) -> tuple[list[ParsedPair], str]:
    """(question, spoken citation) pairs of one stored answer, and the parse problem if any."""
    questions, problem = parse_questions(text)
    answer = spoken_text(citation)
    return [ParsedPair(q, answer, 1, not problem) for q in questions], problem
