"""Hybrid extraction: the dialogue rules find direct speech and attribute what they can; the LLM is asked only
what they cannot settle, a passage at a time under a schema; the union is checked, grounded and deduped.

What the rules cannot settle, near the character (in the paragraphs `focus.py` keeps: where they are
named, speak, or take part in an exchange): a reply with no speaker, or one whose speaker is only a pronoun's
guess or the turn-taking of an exchange; and a paragraph of narration with a cue of thought or writing
("pensa", "se disait", "lettre", a question or an exclamation) that may be the character's thought or letter.
Each question names a choice of speakers (the character, the people of the passage, "autre", "inconnu"), and
each passage carries a control question whose answer the rules know (see `control`).
"""

from __future__ import annotations

import json
import re
import time
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dantes_mlx.extract import checks
from dantes_mlx.extract.chunks import Book, Chunk, chunk_book
from dantes_mlx.extract.focus import focus_paragraphs, paragraph_offsets
from dantes_mlx.extract.grounding import spoken_segments
from dantes_mlx.extract.llm_method import call_and_store
from dantes_mlx.extract.output import ExtractSummary, check_paths, finish, side_paths
from dantes_mlx.extract.prompt import KINDS, CitationPrompt, citation_prompt
from dantes_mlx.extract.rows import Source, context_before, make_row
from dantes_mlx.extract.rules_method import rule_rows
from dantes_mlx.fr import dialogue
from dantes_mlx.fr.dialogue import Quote, is_character
from dantes_mlx.fr.lexicon import PRONOUNS
from dantes_mlx.fr.narrator import is_first_person, quote_kind
from dantes_mlx.fr.ranker import bare_key
from dantes_mlx.llm.base import call_sampling
from dantes_mlx.llm.batch import FailureLimit
from dantes_mlx.outputs import output_lock
from dantes_mlx.store import Store, item_key

if TYPE_CHECKING:
    from dantes_mlx.config import CharacterConfig, ExtractConfig
    from dantes_mlx.llm.base import LLMClient

OTHER, UNKNOWN = "autre", "inconnu"
ANSWER_KINDS = (*KINDS, "récit")
PASSAGE_CHARS = 3000      # most characters of book text around one batch of questions
MAX_QUESTIONS = 8         # questions per call
MAX_NAMES = 8             # speakers offered besides "autre" and "inconnu"
QUOTED_CHARS = 60         # how much of a reply or paragraph a question repeats (the passage marks it [n])
_THOUGHT = re.compile(r"\b(?:pens|song|réfléch|médit|se\s+di[st]|se\s+demand|écri|lettre|billet|journal)\w*|[?!]",
                      re.I)
_GUESSES = {p for p in PRONOUNS if p not in ("je", "j'", "nous", "moi")}
_MID_CAPITAL = re.compile(r"(?<=[\w,;] )[A-ZÀ-Ý][\w’'-]+")


@dataclass(frozen=True)
class Question:
    """A reply whose speaker the rules cannot settle, or a paragraph of narration that may be a thought or letter."""
    kind: str              # reply | narration
    start: int
    end: int
    quote: Quote | None = None
    expected: str | None = None  # a control: a reply an incise gives to someone else, whose answer is known

    def line(self, text: str, number: int) -> str:
        """The question as the LLM reads it: the mark [n] put before it in the passage, and its first words."""
        if self.kind == "reply":
            words = self.quote.speech(text)
            return f"{number}. Réplique [{number}] « {_cut(words).rstrip(',; ')} » : qui la prononce ?"
        return (f"{number}. Paragraphe [{number}] « {_cut(text[self.start:self.end])} » : est-ce une pensée ou un "
                "écrit, et de qui ?")


def _cut(words: str) -> str:
    words = " ".join(words.split())
    return words if len(words) <= QUOTED_CHARS else words[:QUOTED_CHARS].rsplit(" ", 1)[0] + " […]"


def unsettled(q: Quote, character: "CharacterConfig") -> bool:
    """Whether the rules leave a reply's speaker open: none, a pronoun's antecedent, or the exchange's turn;
    a reply they give the character is settled."""
    aliases = list(character.aliases)
    if is_character(q.speaker, character.name, aliases) or character.narrator and is_first_person(q.speaker):
        return False
    mention = (q.mention or "").lower().replace("’", "'")
    return q.speaker is None or q.cue == "alternation" or mention in _GUESSES


def questions(book: Book, quotes: list[Quote], character: "CharacterConfig") -> list[Question]:
    """The questions for the LLM in a book, in text order (see the module docstring)."""
    text, aliases = book.text, list(character.aliases)
    paras = paragraph_offsets(text)
    seen = focus_paragraphs(text, character.name, aliases, character.narrator)
    near = [any(seen[max(0, i - 1):i + 2]) for i in range(len(paras))]
    out, k = [], 0
    for i, (a, b) in enumerate(paras):
        inside = []
        while k < len(quotes) and quotes[k].start < b:
            if quotes[k].start >= a:
                inside.append(quotes[k])
            k += 1
        if not near[i]:
            continue
        out += [Question("reply", q.start, q.end, q) for q in inside if unsettled(q, character)]
        if not inside and b - a >= 60 and _THOUGHT.search(text, a, b):
            out.append(Question("narration", a, b))
    return out


@dataclass(frozen=True)
class Passage:
    """Consecutive questions and the text they are asked about (two paragraphs of context before the first)."""
    start: int
    end: int
    questions: tuple[Question, ...]


def control(passage: Passage, quotes: list[Quote], starts: list[int], speakers: dict, character: "CharacterConfig",
            reach: int = 2000) -> Question | None:
    """A control question for a passage: the reply nearest to it (inside it, else within `reach` characters
    before or after) that an incise gives by name to someone the book hears speak, not the character ("— Tiens !
    dit Bouvard."). A model that answers it wrongly is guessing: the passage's answers are not used. `starts`:
    the quotations' start offsets (they are in text order)."""
    asked = {q.start for q in passage.questions}
    near = quotes[bisect_right(starts, passage.start - reach - 5000):bisect_right(starts, passage.end + reach)]

    def distance(q: Quote) -> int:
        return max(0, passage.start - q.end, q.start - passage.end)

    found = [q for q in near if q.start not in asked and q.cue == "incise" and q.speaker and q.mention == q.speaker
             and distance(q) <= reach and bare_key(q.speaker) in speakers
             and not is_character(q.speaker, character.name, list(character.aliases))]
    if not found:
        return None
    q = min(found, key=distance)
    return Question("reply", q.start, q.end, q, expected=speakers[bare_key(q.speaker)])


def with_control(text: str, passage: Passage, check: Question | None) -> Passage:
    """The passage with its control question in text order (and the text reaching it, whole paragraphs)."""
    if check is None:
        return passage
    paras = paragraph_offsets(text)
    starts = [a for a, _ in paras]
    start = min(passage.start, paras[max(0, bisect_right(starts, check.start) - 1)][0])
    end = max(passage.end, paras[max(0, bisect_right(starts, check.end - 1) - 1)][1])
    ordered = tuple(sorted(passage.questions + (check,), key=lambda q: q.start))
    return Passage(start, end, ordered)


def passages(text: str, asked: list[Question]) -> list[Passage]:
    """The questions batched into passages of at most PASSAGE_CHARS and MAX_QUESTIONS."""
    paras = paragraph_offsets(text)
    starts = [a for a, _ in paras]

    def para_index(pos: int) -> int:
        return max(0, bisect_right(starts, pos) - 1)

    out: list[Passage] = []
    for q in asked:
        end = paras[para_index(q.end - 1)][1]
        last = out[-1] if out else None
        if last and len(last.questions) < MAX_QUESTIONS and end - last.start <= PASSAGE_CHARS:
            out[-1] = Passage(last.start, max(last.end, end), last.questions + (q,))
        else:
            out.append(Passage(paras[max(0, para_index(q.start) - 2)][0], end, (q,)))
    return out


def book_speakers(quotes: list[Quote], text: str) -> dict[str, str]:
    """The people the rules hear speak anywhere in a book and that a proper name names ("Florent", "madame
    François", "M. de Courville"; not "la maraîchère" or "l'homme", which may be anyone, the named ones
    included): bare key -> a surface form."""
    proper = {m.group() for m in _MID_CAPITAL.finditer(text)}
    out = {}
    for q in quotes:
        if q.speaker and not is_first_person(q.speaker) and any(w in proper for w in re.split(r"[\s'’]+", q.speaker)):
            out.setdefault(bare_key(q.speaker), q.speaker.strip())
    return out


def speaker_choices(text: str, passage: Passage, speakers: dict[str, str], character: "CharacterConfig") -> list[str]:
    """The character, the expected speakers of control questions and the book's speakers (book_speakers) named in
    the passage, in alphabetical order (a model that always picks the first or second name gains nothing), then
    "autre" and "inconnu"."""
    names, keys = [character.name], {bare_key(character.name)}
    for q in passage.questions:
        if q.expected and bare_key(q.expected) not in keys:
            names.append(q.expected)
            keys.add(bare_key(q.expected))
    said = f" {bare_key(text[passage.start:passage.end])} "
    for key, who in speakers.items():
        if key not in keys and f" {key} " in said and not is_character(who, character.name, list(character.aliases)):
            names.append(who)
            keys.add(key)
    return sorted(names[:MAX_NAMES], key=bare_key) + [OTHER, UNKNOWN]


def answer_schema(choices: list[str], n: int) -> dict:
    """Exactly n answers, each a speaker among the choices and a kind."""
    item = {"type": "object", "properties": {"speaker": {"type": "string", "enum": choices},
                                             "kind": {"type": "string", "enum": list(ANSWER_KINDS)}},
            "required": ["speaker", "kind"]}
    return {"type": "object", "properties": {"answers": {"type": "array", "items": item, "minItems": n, "maxItems": n}},
            "required": ["answers"]}


def marked_passage(text: str, passage: Passage) -> str:
    """The passage with [n] before the reply or paragraph of question n (questions are in text order)."""
    parts, pos = [], passage.start
    for number, q in enumerate(passage.questions, 1):
        parts += [text[pos:q.start], f"[{number}] "]
        pos = q.start
    return ("".join(parts) + text[pos:passage.end]).strip()


def user_text(text: str, passage: Passage, choices: list[str]) -> str:
    """The varying part of a call: the marked passage, the choices, the numbered questions."""
    lines = [q.line(text, i) for i, q in enumerate(passage.questions, 1)]
    return (f"Passage :\n{marked_passage(text, passage)}\n\nNoms proposés : {', '.join(choices)}\n\n"
            "Questions :\n" + "\n".join(lines))


def parse_answers(reply: str) -> tuple[list[dict], str | None]:
    """The answers of a reply and an error (None when it is the JSON asked for)."""
    try:
        data = json.loads(re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", reply.strip()))
    except json.JSONDecodeError:
        return [], "not_json"
    answers = data.get("answers") if isinstance(data, dict) else None
    if not isinstance(answers, list):
        return [], "no_answers_list"
    return [a if isinstance(a, dict) else {} for a in answers], None


def failed_controls(passage: Passage, answers: list[dict], character: "CharacterConfig") -> list[dict]:
    """The control questions answered wrongly (not the name the incise gives): {"expected", "answer"} for each.
    Only proper names are offered besides the character (book_speakers), so one person has one name there."""
    return [{"expected": q.expected, "answer": a.get("speaker")} for q, a in zip(passage.questions, answers)
            if q.expected and bare_key(str(a.get("speaker") or "")) != bare_key(q.expected)]


def answer_problem(reply: str, finish_reason: str, passage: Passage, character: "CharacterConfig") -> str | None:
    """What makes a reply junk for the watch: cut, not JSON, not one answer per question, a control failed."""
    if finish_reason == "length":
        return "cut_by_max_tokens"
    answers, error = parse_answers(reply)
    if error or len(answers) != len(passage.questions):
        return error or "wrong_number_of_answers"
    return "failed_control" if failed_controls(passage, answers, character) else None


# -- the stage -------------------------------------------------------------------------------------
@dataclass
class _Call:
    """One passage to ask about: its book, a chunk standing for it (provenance), the store key, the request."""
    book: Book
    chunk: Chunk
    passage: Passage
    key: str
    request: dict


def _passage_chunk(book: Book, index: int, passage: Passage) -> Chunk:
    first = book.text.count("\n", 0, passage.start) + 1
    last = first + book.text.count("\n", passage.start, passage.end)
    return Chunk(f"{book.id}#h{index:04d}", book.id, index, first, last, passage.start, passage.end,
                 book.chapter_at(passage.start), book.text[passage.start:passage.end])


def plan_calls(book: Book, quotes: list[Quote], character: "CharacterConfig", prompt: CitationPrompt, model_id: str,
               sampling: dict) -> list[_Call]:
    """One call per passage of questions, keyed by everything it sends."""
    calls, aliases = [], list(character.aliases)
    speakers, starts = book_speakers(quotes, book.text), [q.start for q in quotes]
    for index, passage in enumerate(passages(book.text, questions(book, quotes, character))):
        passage = with_control(book.text, passage, control(passage, quotes, starts, speakers, character))
        choices = speaker_choices(book.text, passage, speakers, character)
        data = user_text(book.text, passage, choices)
        schema = answer_schema(choices, len(passage.questions))
        messages = prompt.messages(character.name, aliases, data, character.narrator)
        key = item_key("extract-hybrid", prompt.version, model_id,
                       {"messages": messages, "schema": schema, "sampling": {k: sampling[k] for k in sorted(sampling)}})
        calls.append(_Call(book, _passage_chunk(book, index, passage), passage, key,
                           {"messages": messages, "json_schema": schema, **sampling}))
    return calls


def settle(call: _Call, reply: str, source: Source, character: "CharacterConfig") -> tuple[list[dict], list[dict]]:
    """Rows of the questions the LLM answered with the character; a reject when the reply is unusable."""
    answers, error = parse_answers(reply)
    rejects = [{"reason": error, "raw": reply[:2000]}] if error else []
    if not error and len(answers) != len(call.passage.questions):
        rejects.append({"reason": "wrong_number_of_answers", "raw": reply[:2000]})
    failed = failed_controls(call.passage, answers, character)
    if failed:
        rejects.append({"reason": "failed_control", "controls": failed, "questions": len(call.passage.questions)})
        answers = []
    rows, text = [], call.book.text
    for q, answer in zip(call.passage.questions, answers):
        who, kind = str(answer.get("speaker") or ""), str(answer.get("kind") or "")
        if q.expected or not is_character(who, character.name, list(character.aliases)):
            continue
        if q.kind == "reply":  # a marked reply is speech, or a thought when the narration's "je" thinks it
            spoken = (list(q.quote.segments), max([q.end] + [b for _, b in q.quote.incises]))
            kind = quote_kind(text, q.quote)
        elif kind in ("pensée", "écrit"):
            spoken = spoken_segments(text, q.start, q.end, [])
        else:
            continue
        rows.append(make_row(call.book, call.chunk, q.start, q.end, source, kind, 100.0, "rules+llm",
                             context_before(text, q.start), spoken=spoken))
    for r in rejects:
        r.update(book=call.book.id, chunk=call.chunk.id)
    return rows, rejects


def extract_hybrid(books: list[Book], character: "CharacterConfig", cfg: "ExtractConfig", out: str | Path,
                   client: "LLMClient", *, sampling: dict | None = None, concurrency: int = 1,
                   progress: bool = True, max_failures: int = 5) -> ExtractSummary:
    """Rules first; the LLM answers what they leave open (stored, resumable); the union checked and deduped.
    Failures as in extract_llm: `max_failures` failed calls in a row stop the run, the previous output is kept."""
    out = check_paths(out, books)
    with output_lock(out):
        return _extract_hybrid(books, character, cfg, out, client, sampling, concurrency, progress, max_failures)


def _extract_hybrid(books, character, cfg, out: Path, client, sampling, concurrency, progress,
                    max_failures) -> ExtractSummary:
    started = time.monotonic()
    checks.check_chat_template(client)
    prompt = citation_prompt(language=character.language, kind="hybrid")
    effective = call_sampling(client, dict(sampling or {"temperature": cfg.temperature}))
    store_path, errors_path, _ = side_paths(out)
    store = Store(store_path, rejects_path=errors_path)
    summary = ExtractSummary("hybrid", str(out), str(out), character.name, store=str(store_path))
    rows, plans, gates = [], [], {}
    for book in books:
        quotes = dialogue.find_quotations(book.text)
        gates[book.id] = checks.book_gate(book, character, cfg)
        rows += rule_rows(book, character, chunk_book(book, cfg.chunk_lines, cfg.overlap), quotes)
        plans += plan_calls(book, quotes, character, prompt, client.model_id, effective)
    if cfg.limit and len(plans) > cfg.limit:  # the passages left out keep the rules' answers
        plans, summary.limited = plans[:cfg.limit], len(plans) - cfg.limit
    summary.chunks = len(plans)
    summary.questions = sum(1 for c in plans for q in c.passage.questions if not q.expected)
    pending = [c for c in plans if c.key not in store]
    summary.cached = len(plans) - len(pending)
    call_and_store(client, [c.request for c in pending], [(c.chunk, c.key) for c in pending], store, summary, concurrency,
          progress, FailureLimit(max_failures), _watch(client, cfg, pending, character))
    source = Source("hybrid", client.model_id, prompt.version, character.name)
    added, rejects = [], []
    for c in plans:
        value = store.get(c.key)
        if value is not None:
            summary.tokens.update({k: v for k, v in value.items() if k.endswith("_tokens")})
            got, bad = settle(c, value["text"], source, character)
            got, refused = gates[c.book.id](got)
            added += got
            rejects += bad + refused
    summary.added = len(added)
    finish(summary, rows + added, rejects, out, started)
    return summary


def _watch(client, cfg: "ExtractConfig", pending: list[_Call], character: "CharacterConfig"):
    """The reply watch of checks.py over the hybrid's answers (None when extract.check_replies is off)."""
    if not getattr(cfg, "check_replies", True):
        return None
    watch, by_chunk = checks.ReplyWatch(client.model_id), {c.chunk.id: c for c in pending}

    def see(chunk, value) -> None:
        if chunk is None:
            return watch.verdict()
        watch.see(answer_problem(value["text"], value.get("finish_reason", ""), by_chunk[chunk.id].passage,
                                 character))
    return see
