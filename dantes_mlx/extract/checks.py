"""Checks on what an LLM extracted: a citation is a quotation of some length, said once, not narration and not
someone else's words by the rules; and an early stop when the model does not follow the extraction prompt.

Small models pass schema-forced JSON that is junk: the bare name "Sérapion" quoted nine times (each found in the
book, "exact, 100"), a narration fragment given as speech, one object looped 40 times, a line of Sérapion's
given to Clarimonde, `{"citations": []}` or the prompt's own example for every chunk. Each check has a reason
that goes to the rejects file; `disputed_by_rules` is flagged on the row (or dropped, `extract.disputed`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dantes_mlx.errors import ConfigError, ModelError
from dantes_mlx.extract.grounding import fold_for_matching
from dantes_mlx.fr.dialogue import Quote, character_quotes, find_quotations, is_character
from dantes_mlx.fr.lexicon import TITLES_F, TITLES_M
from dantes_mlx.fr.narrator import is_first_person

if TYPE_CHECKING:
    from dantes_mlx.config import CharacterConfig, ExtractConfig

MIN_WORDS = 3  # fewer words is a fragment, unless it is a whole reply ("— Oui.") or a whole sentence
PLACEHOLDERS = {"", "...", "…", "citation", "contexte", "texte", "parole", "exemple"}
DISPUTED_MODES = ("flag", "drop", "keep")
MIN_VERDICT = 3  # fewest replies on which a run may be judged
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def is_placeholder(text: str) -> bool:
    """A citation or context that is the prompt's "..." or a field name, not words of the book."""
    return fold_for_matching(text).strip(" .…") in PLACEHOLDERS or not _words(text)


# -- one reply's items, before grounding -------------------------------------------------------------
def parse_reply(text: str) -> tuple[list[dict], str | None]:
    """Citation objects of a reply and an error (None when it is valid JSON of the expected shape).

    A reply that is not valid JSON (a server without schema support, a truncated answer) still
    gives back every complete object carrying a "citation" string.
    """
    body = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", text.strip())
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        items = _salvage(body)
        return items, "invalid_json"
    items = data.get("citations") if isinstance(data, dict) else data
    if not isinstance(items, list):
        return [], "no_citations_list"
    return [i for i in items if isinstance(i, dict)], None


def _salvage(text: str) -> list[dict]:
    decoder, items, pos = json.JSONDecoder(), [], 0
    while (pos := text.find("{", pos)) >= 0:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            pos += 1
            continue
        if isinstance(obj, dict) and isinstance(obj.get("citation"), str):
            items.append(obj)
            pos = end
        else:
            pos += 1
    return items


def unique_items(items: list[dict]) -> tuple[list[dict], list[dict]]:
    """The items of one reply with each citation once (a model looping one object 40 times gives one row);
    a reject per repeated citation with how many times it came."""
    counts = Counter(fold_for_matching(str(i.get("citation") or "")) for i in items)
    seen, kept, rejects = set(), [], []
    for item in items:
        key = fold_for_matching(str(item.get("citation") or ""))
        if key in seen:
            continue
        seen.add(key)
        kept.append(item)
        if counts[key] > 1:
            rejects.append({"reason": "repeated_in_reply", "times": counts[key], "citation": item.get("citation")})
    return kept, rejects


def item_problem(cited: str, names: set[str]) -> str | None:
    """Why a cited string cannot be a citation before looking for it in the book: `placeholder` (the prompt's
    "..."), `bare_name` (only names of the text or of the character: "Sérapion", "Monsieur Morrel")."""
    if is_placeholder(cited):
        return "placeholder"
    words = re.findall(r"[^\W\d_]+", cited)  # "l’abbé" is two words here
    if len(words) <= 4 and all(w.lower() in names for w in words):
        return "bare_name"
    return None


# -- one grounded row ---------------------------------------------------------------------------------
def _complete_sentence(text: str) -> bool:
    stripped = text.strip().strip("«»\"“”—–- \u00a0")
    return bool(stripped) and stripped[:1].isupper() and stripped.rstrip("»\"” ").endswith((".", "!", "?", "…"))


def row_problem(text: str, row: dict, quotes: list[Quote]) -> str | None:
    """Why a grounded row is not a citation: `narration` (speech grounded outside every quotation the rules
    see), `fragment` (under MIN_WORDS words, neither a whole reply nor a whole sentence)."""
    start, end = row["start"], row["end"]
    inside = [q for q in quotes if q.start < end and start < q.end]
    if row.get("kind") == "parole" and not inside:
        return "narration"
    if len(_words(row["citation"])) >= MIN_WORDS or _complete_sentence(row["citation"]):
        return None
    whole = any(fold_for_matching(q.speech(text)) == fold_for_matching(row["citation"]) for q in inside)
    return None if whole else "fragment"


def rules_speaker(row: dict, quotes: list[Quote]) -> Quote | None:
    """The rules' quotation that overlaps the row most (None when none does)."""
    best, most = None, 0
    for q in quotes:
        overlap = min(q.end, row["end"]) - max(q.start, row["start"])
        if overlap > most:
            best, most = q, overlap
    return best


def disputed_by(row: dict, quotes: list[Quote], name: str, aliases, narrator: bool = False) -> str | None:
    """The speaker the rules give this row's words when it is someone other than the character (None when the
    rules name no one, or the character)."""
    q = rules_speaker(row, quotes)
    if q is None or not q.speaker or is_character(q.speaker, name, aliases):
        return None
    if is_first_person(q.speaker) and narrator:
        return None
    return q.speaker


@dataclass
class Gate:
    """The checks of one book's rows: names of the text, the rules' quotations, what to do with a dispute."""
    text: str
    quotes: list[Quote]
    name: str
    aliases: list = field(default_factory=list)
    narrator: bool = False
    disputed: str = "flag"
    names: set = field(default_factory=set)  # lower-case name words (default: name_words of the text)

    def __post_init__(self):
        if self.disputed not in DISPUTED_MODES:
            raise ConfigError(f"extract.disputed={self.disputed!r}", path="dantes.yaml [extract]",
                              fix=f"use one of: {', '.join(DISPUTED_MODES)}")
        self.names = self.names or name_words(self.text, self.name, self.aliases)

    def __call__(self, rows: list[dict]) -> tuple[list[dict], list[dict]]:
        """(rows kept, rejects with reasons); a kept row the rules give to someone else carries
        `disputed_by_rules` when disputed == "flag"."""
        kept, rejects = [], []
        for row in rows:
            reason = row_problem(self.text, row, self.quotes)
            other = disputed_by(row, self.quotes, self.name, self.aliases, self.narrator) if not reason else None
            if other and self.disputed == "drop":
                reason = "disputed_by_rules"
            if reason:
                rejects.append({"reason": reason, "citation": row["citation"], "book": row["book"],
                                "chunk": row["chunk"], "start": row["start"], "end": row["end"],
                                **({"rules_speaker": other} if other else {})})
                continue
            kept.append({**row, "disputed_by_rules": other} if other and self.disputed == "flag" else row)
        return kept, rejects


_MID_SENTENCE_CAPITAL = re.compile(r"(?<=[\w,;] )[A-ZÀ-Ý][\w’'-]*")


def name_words(text: str, name: str, aliases) -> set[str]:
    """Lower-case words that name someone: the character's names, titles, and the words the text capitalises
    inside a sentence ("Sérapion" in "…dit Sérapion", not "Bonjour" at the start of a reply)."""
    words = {w.lower() for a in (name, *aliases) for w in _words(a)}
    words |= {m.group().lower() for m in _MID_SENTENCE_CAPITAL.finditer(text)}
    return words | TITLES_M | TITLES_F | {"de", "du", "le", "la", "l"}


# -- is the model following the prompt? ----------------------------------------------------------------
def check_chat_template(client) -> None:
    """Before the first call: a llama.cpp GGUF without a chat template (a base model, or an instruct model
    converted without it) cannot follow a chat prompt. Servers apply their own template: not checked."""
    template = getattr(client, "_template", None)  # LlamaCppClient: the GGUF's, or llm.chat_template's
    if template is not None and not str(template).strip():
        raise ModelError(f"{client.model_id} has no chat template (GGUF metadata tokenizer.chat_template): it is a "
                         "base model or was converted without one, and cannot follow the extraction prompt",
                         path=str(getattr(client, "path", client.model_id)),
                         fix="use an instruct (chat) GGUF, or set llm.chat_template to its Jinja template file")


def reply_problem(text: str, finish_reason: str, hears_character: bool) -> str | None:
    """Why one reply shows the model is not following the prompt: cut by max_tokens, not JSON, the prompt's
    example or placeholders, or no citation where the rules hear the character speak."""
    if finish_reason == "length":
        return "cut_by_max_tokens"
    items, error = parse_reply(text)
    if error:
        return "not_json"
    if items and all(is_placeholder(str(i.get("citation") or "")) for i in items):
        return "example_or_placeholder"
    if not items and hears_character:
        return "empty_where_the_rules_hear_the_character"
    return None


class ReplyWatch:
    """Watches the first replies of a run and stops it (ModelError) when most are junk: the model is not
    following the prompt (a non-instruct model, a missing or wrong chat template, too small a model)."""

    def __init__(self, model_id: str, first: int = 6):
        self.model_id, self.first = model_id, first
        self.seen: Counter = Counter()
        self.count = 0

    def see(self, problem: str | None) -> None:
        """Count one reply and what is wrong with it (None: nothing); after the first `first`, stop if most
        were junk."""
        if self.count >= self.first:
            return
        self.count += 1
        self.seen[problem] += 1
        self.verdict(final=False)

    def verdict(self, final: bool = True) -> None:
        """Raise when more than half of the replies seen are junk (checked at `first` replies, or at the end of
        a run of at least MIN_VERDICT replies: one or two odd replies are no evidence)."""
        if self.count < (MIN_VERDICT if final else self.first):
            return
        bad = self.count - self.seen[None]
        if 2 * bad > self.count:
            why = ", ".join(f"{k} {n}" for k, n in self.seen.most_common() if k)
            raise ModelError(f"{self.model_id} is not following the extraction prompt: {bad} of its first "
                             f"{self.count} replies are junk ({why}); stopped before the rest",
                             fix="use an instruct model that follows JSON instructions (7B or more for a whole novel), "
                                 "check llm.chat_template, raise llm.max_tokens if replies are cut, or use "
                                 "`--method rules` (no LLM); extract.check_replies: false runs it anyway")


def hears_character(text: str, start: int, end: int, quotes: list[Quote], name: str, aliases,
                    narrator: bool = False) -> bool:
    """Whether the rules find the character speaking inside text[start:end]."""
    inside = [q for q in quotes if start <= q.start and q.end <= end]
    return bool(character_quotes(text, name, aliases, narrator, quotes=inside))


# -- wiring for the LLM method -----------------------------------------------------------------------
def book_gate(book, character: "CharacterConfig", cfg: "ExtractConfig") -> Gate:
    """The checks of a book's LLM citations, with the rules' quotations of the whole book."""
    return Gate(book.text, find_quotations(book.text), character.name, list(character.aliases), character.narrator,
                getattr(cfg, "disputed", "flag"))


def extraction_watch(client, book_of: dict, gates: dict, character: "CharacterConfig"):
    """A callback for each new reply that stops the run when the model is not following the prompt."""
    watch = ReplyWatch(client.model_id)

    def see(chunk, value: dict | None) -> None:
        if value is None:  # the end of the calls: judge what was seen, even when fewer than watch.first
            return watch.verdict()
        gate = gates[book_of[chunk.id].id]
        hears = hears_character(gate.text, chunk.start, chunk.end, gate.quotes, character.name,
                                list(character.aliases), character.narrator)
        watch.see(reply_problem(value["text"], value.get("finish_reason", ""), hears))
    return see
