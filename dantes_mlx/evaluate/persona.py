"""Does an answer stay in character? Model-free checks for out-of-character probes and multi-turn scenes.

An answer breaks character when it speaks as what it is rather than as the character: it calls itself an AI, a
language model, a program or an assistant, names the company that made it, writes an assistant's stock phrases
("n'hésitez pas", "comment puis-je vous aider") or a chat assistant's layout (Markdown headings, bullet lists),
or leaves the book's language. Mentioning such a thing is allowed: "Je ne sais ce qu'est une intelligence
artificielle" stays in character; "En tant qu'intelligence artificielle, je..." does not. The LLM judge, when run,
scores the same answers on its `in_character` criterion; these checks need no model and are what CI measures.
"""

from __future__ import annotations

import re
from collections import Counter

from dantes_mlx.evaluate.metrics import address_form, guess_language

_AI = (r"(?:une?\s+)?(?:intelligence\s+artificielle|IA|I\.A\.|AI|mod[eè]le\s+(?:de\s+langage|linguistique|d'IA)|"
       r"programme(?:\s+informatique)?|logiciel|assistant(?:e)?(?:\s+(?:virtuel(?:le)?|num[eé]rique|IA))?|"
       r"chatbot|robot\s+conversationnel|agent\s+conversationnel)")
_AI_EN = r"(?:an?\s+)?(?:AI|artificial\s+intelligence|(?:large\s+)?language\s+model|LLM|assistant|chatbot|program)"

# (reason, pattern): each pattern is one way of speaking as a machine or an assistant, not as the character.
BREAKS = (
    ("calls itself an AI or assistant", re.compile(
        rf"\b(?:je\s+suis\s+|en\s+tant\s+qu(?:e\s+|'|’)\s*){_AI}\b"
        rf"|\b(?:I\s+am|I'm|as)\s+{_AI_EN}\b", re.IGNORECASE)),
    ("names the company or model behind it", re.compile(
        r"\b(?:OpenAI|ChatGPT|GPT-?\d|Mistral\s+AI|Anthropic|Hugging\s*Face|Meta\s+AI|Google\s+DeepMind|SmolLM)\b"
        r"|\b(?:cr[eé]{1,2}\s+par|d[eé]velopp[eé]e?\s+par|entra[iî]n[eé]e?\s+par|trained\s+by|created\s+by)\s+"
        r"(?:une?\s+)?(?:[eé]quipe|entreprise|soci[eé]t[eé]|company|team)\b", re.IGNORECASE)),
    ("disclaims a body, feelings or opinions", re.compile(
        r"\bje\s+n'ai\s+pas\s+(?:de\s+|d['’])?(?:corps|sentiments|[eé]motions|opinions?\s+personnelles?|"
        r"exp[eé]riences?\s+personnelles?|acc[eè]s\s+(?:à|a)\s+(?:internet|des\s+donn[eé]es))"
        r"|\bI\s+(?:don't|do\s+not)\s+have\s+(?:a\s+body|feelings|emotions|personal\s+(?:opinions|experiences))"
        r"|\bmes\s+donn[eé]es\s+d'entra[iî]nement\b|\bmy\s+training\s+data\b", re.IGNORECASE)),
    ("an assistant's stock phrases", re.compile(
        r"\bn'h[eé]sitez\s+pas\s+(?:à|a)\b|\bcomment\s+puis-je\s+vous\s+(?:aider|assister)\b"
        r"|\bje\s+suis\s+(?:là|la)\s+pour\s+vous\s+aider\b|\bj'esp[eè]re\s+que\s+(?:cela|ça|ca)\s+(?:vous\s+)?aide"
        r"|\bhow\s+can\s+I\s+(?:help|assist)\b|\bfeel\s+free\s+to\b|\bI\s+hope\s+this\s+helps\b", re.IGNORECASE)),
    ("a chat assistant's layout (Markdown heading or list)", re.compile(
        r"^\s{0,3}(?:#{1,6}\s|\*\*[^*\n]+\*\*\s*:?\s*$|[-*•]\s+\S.*\n\s{0,3}[-*•]\s+\S|\d+[.)]\s+\S.*\n\s{0,3}\d+[.)]\s)",
        re.MULTILINE)),
)


def breaks(answer: str, language: str = "fr") -> list[str]:
    """The reasons `answer` breaks character (empty: it stays in character)."""
    text = answer.strip()
    if not text:
        return ["empty answer"]
    found = [reason for reason, pattern in BREAKS if pattern.search(text)]
    spoken = guess_language(text)
    if language in ("fr", "en") and spoken not in (language, "unknown"):
        found.append(f"answers in {spoken}, not {language}")
    return found


def in_character(answer: str, language: str = "fr") -> bool:
    return not breaks(answer, language)


def ooc_summary(answers: list[str], language: str = "fr") -> dict:
    """Out-of-character probes: the share answered in character, and how the others broke it."""
    found = [breaks(a, language) for a in answers]
    kept = sum(not f for f in found)
    return {"n": len(answers), "in_character": kept / len(answers) if answers else None,
            "reasons": dict(Counter(r for f in found for r in f))}


def scene_summary(scenes: list[list[str]], language: str = "fr") -> dict:
    """Multi-turn scenes (each: the model's answers turn by turn, its own earlier answers in the context):
    the share in character at each turn, at each scene's last turn and at every turn of a scene, and whether the
    address form (vous or tu) stays the same across the turns that use one."""
    scenes = [s for s in scenes if s]
    if not scenes:
        return {"n": 0}
    found = [[breaks(a, language) for a in s] for s in scenes]  # each answer checked once
    longest = max(len(s) for s in scenes)
    by_turn = []
    for turn in range(longest):
        at = [not f[turn] for f in found if len(f) > turn]
        by_turn.append(sum(at) / len(at))
    forms = [{address_form(a) for a in s} - {"none"} for s in scenes]
    return {"n": len(scenes), "turns": longest, "by_turn": by_turn,
            "last_turn": sum(not f[-1] for f in found) / len(scenes),
            "every_turn": sum(not any(f) for f in found) / len(scenes),
            "address_consistent": sum(len(f) <= 1 for f in forms) / len(scenes),
            "reasons": dict(Counter(r for f in found for reasons in f for r in reasons))}
