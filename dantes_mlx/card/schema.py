"""The card's shape: its headings, the JSON schema forced on every card call, and a tolerant reader of replies."""

from __future__ import annotations

import json
import re

# Each heading of the card is a list of traits; two headings group sub-lists.
HEADINGS = {
    "identity": (),
    "psychology": (),
    "verbal_style": ("register", "syntax", "figures", "lexicon", "rhythm"),
    "behaviour": ("provocation", "moral_question", "attack", "praise"),
    "themes": (),
}
# Every list of traits, as a path into the card: ("identity",), ("verbal_style", "register"), ...
TRAIT_LISTS = tuple((h,) if not subs else (h, s) for h, subs in HEADINGS.items() for s in (subs or (None,)))
MAX_EVIDENCE = 3  # citations one trait may name
QUOTE_CHARS = 100  # longest quote ("a few words") when strings are bounded
# What a weak model writes as a trait when it has nothing to say: a heading's own name.
_HEADING_WORDS = {w for h, subs in HEADINGS.items() for w in (h, *subs)} | {"figure", "theme", "trait"}
_CITATION_ID = re.compile(r"\[?c\d+\]?[.,;]?", re.IGNORECASE)  # what the LLM sees a citation as: [c12]


def card_schema(ids: list[str], max_traits: int, max_chars: int = 0) -> dict:
    """JSON schema of a card whose evidence can only name `ids` (an enum: a forced reply cannot invent one; no ids,
    no traits); at most `max_traits` per list, `max_chars` per trait and quote (0: no limit)."""
    def text(min_length: int, limit: int) -> dict:
        return {"type": "string", "minLength": min_length, **({"maxLength": limit} if limit else {})}

    key = {"type": "string", "enum": list(ids)} if ids else {"type": "string"}
    quote = text(0, min(max_chars, QUOTE_CHARS) if max_chars else 0)
    evidence = {"type": "object", "properties": {"id": key, "quote": quote},
                "required": ["id", "quote"], "additionalProperties": False}
    trait = {"type": "object", "properties": {"trait": text(1, max_chars), "evidence": {
        "type": "array", "items": evidence, "minItems": 1, "maxItems": MAX_EVIDENCE}},
        "required": ["trait", "evidence"], "additionalProperties": False}
    traits = {"type": "array", "items": trait, "maxItems": max_traits if ids else 0}

    def heading(subs: tuple) -> dict:
        if not subs:
            return traits
        return {"type": "object", "properties": {s: traits for s in subs}, "required": list(subs),
                "additionalProperties": False}

    summary = text(1, 2 * max_chars)
    properties = {"summary": summary, **{h: heading(s) for h, s in HEADINGS.items()}}
    return {"title": "character_card", "type": "object", "properties": properties,
            "required": list(properties), "additionalProperties": False}


def persona_schema() -> dict:
    """JSON schema of the persona call: one text."""
    return {"title": "persona", "type": "object", "properties": {"persona": {"type": "string", "minLength": 1}},
            "required": ["persona"], "additionalProperties": False}


def empty_card() -> dict:
    """A card with no summary and every list empty."""
    return {"summary": "", **{h: ({s: [] for s in subs} if subs else []) for h, subs in HEADINGS.items()}}


def traits_at(card: dict, path: tuple) -> list:
    """The list of traits at `path` (see TRAIT_LISTS)."""
    return card[path[0]][path[1]] if len(path) == 2 else card[path[0]]


def set_traits(card: dict, path: tuple, traits: list) -> None:
    if len(path) == 2:
        card[path[0]][path[1]] = traits
    else:
        card[path[0]] = traits


def read_json_object(text: str) -> tuple[dict | None, str | None]:
    """The JSON object of a reply (code fences and prose around it ignored) and an error, None when clean."""
    body = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", text.strip())
    try:
        data = json.loads(body)
        return (data, None) if isinstance(data, dict) else (None, "not_an_object")
    except json.JSONDecodeError:
        start = body.find("{")
        try:
            data, _ = json.JSONDecoder().raw_decode(body, start) if start >= 0 else (None, 0)
        except json.JSONDecodeError:
            closed = close_cut_json(body[start:]) if start >= 0 else None
            return (json.loads(closed), "cut_json") if closed else (None, "invalid_json")
        return (data, "text_around_json") if isinstance(data, dict) else (None, "invalid_json")


def close_cut_json(text: str) -> str | None:
    """A JSON object cut short (a reply stopped by max_tokens) ended after its last complete value inside it and
    closed, so what was written before the cut is kept; None when no value was complete."""
    stack, in_string, escaped, last = [], False, False, None
    for i, ch in enumerate(text):
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if not stack or stack.pop() != ch:
                return None
            if stack:
                last = (i, "".join(reversed(stack)))
    if last is None or not stack:
        return None
    return text[:last[0] + 1] + last[1]


def parse_card(text: str) -> tuple[dict | None, list[dict]]:
    """A card from a reply, every list present, and what was wrong with it: [] when nothing; a card of None
    when the reply holds no JSON object. Malformed traits and evidence are left out, each with a reason."""
    data, error = read_json_object(text)
    problems = [{"reason": error}] if error else []
    if data is None:
        return None, problems
    card = empty_card()
    summary = data.get("summary")
    card["summary"] = " ".join(summary.split()) if isinstance(summary, str) else ""
    for path in TRAIT_LISTS:
        raw = data.get(path[0])
        raw = raw.get(path[1]) if len(path) == 2 and isinstance(raw, dict) else raw if len(path) == 1 else None
        traits, bad = _traits(raw if isinstance(raw, list) else [])
        set_traits(card, path, traits)
        problems += [{**b, "list": "/".join(path)} for b in bad]
    return card, problems


def _traits(items: list) -> tuple[list[dict], list[dict]]:
    traits, bad = [], []
    for item in items:
        text = item.get("trait") if isinstance(item, dict) else None
        if not isinstance(text, str) or not text.strip():
            bad.append({"reason": "malformed_trait", "item": item})
            continue
        if text.strip().strip(".").lower().replace(" ", "_") in _HEADING_WORDS:
            bad.append({"reason": "heading_as_trait", "trait": text})
            continue
        if _CITATION_ID.fullmatch(text.strip()):  # "c12": the evidence's id written as the trait (SmolLM2-135M)
            bad.append({"reason": "id_as_trait", "trait": text})
            continue
        evidence = item.get("evidence") if isinstance(item.get("evidence"), list) else []
        kept = [{"id": str(e["id"]), "quote": str(e.get("quote") or "").strip()} for e in evidence
                if isinstance(e, dict) and isinstance(e.get("id"), (str, int))]
        bad += [{"reason": "malformed_evidence", "trait": text, "item": e} for e in evidence
                if not (isinstance(e, dict) and isinstance(e.get("id"), (str, int)))]
        traits.append({"trait": " ".join(text.split()), "evidence": kept})
    return traits, bad
