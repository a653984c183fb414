"""LLM-as-judge: a 1-7 rubric with reasons, and pairwise preference asked in both orders to cancel order bias."""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass

from dantes_mlx.llm.base import LLMClient
from dantes_mlx.llm.prompt import load_prompt
from dantes_mlx.store import Store, item_key

STAGE = "eval-judge"
CRITERIA = ("fidelity", "style", "coherence", "in_character")
SCORES = list(range(1, 8))
WINNERS = ("A", "B", "tie")


class JudgeOutputError(ValueError):
    """The judge's reply is not the JSON object the schema asks for."""


@dataclass
class JudgeSettings:
    """Who the judge evaluates and how it samples."""
    name: str
    persona: str
    language: str = "fr"
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int = 0
    reasons_max_chars: int = 400   # maxLength of the reasons (keeps a grammar-forced reply finite); 0: none
    retries: int = 1               # corrective re-asks after a malformed reply


def _text_schema(max_chars: int) -> dict:
    return {"type": "string", "minLength": 1, **({"maxLength": max_chars} if max_chars else {})}


def rubric_schema(max_chars: int = 400) -> dict:
    """{"scores": {criterion: 1..7}, "reasons": str}; scores first so a cut-off reply keeps them."""
    score = {"type": "integer", "enum": SCORES}
    scores = {"type": "object", "properties": {c: score for c in CRITERIA}, "required": list(CRITERIA)}
    return {"type": "object", "properties": {"scores": scores, "reasons": _text_schema(max_chars)},
            "required": ["scores", "reasons"]}


def pairwise_schema(max_chars: int = 400) -> dict:
    """{"winner": "A" | "B" | "tie", "reason": str}."""
    return {"type": "object", "properties": {"winner": {"type": "string", "enum": list(WINNERS)},
                                             "reason": _text_schema(max_chars)},
            "required": ["winner", "reason"]}


def json_object(text: str, key: str | None = None) -> dict:
    """The reply as a JSON object: the whole text, else the first object in it that has `key` (a model may
    add prose, or show the format before answering), else the first object."""
    text = text.strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        decoder, found = json.JSONDecoder(), []
        for start in (i for i, ch in enumerate(text) if ch == "{"):
            try:
                found.append(decoder.raw_decode(text, start)[0])
            except json.JSONDecodeError:
                continue
        found = [v for v in found if isinstance(v, dict)]
        value = next((v for v in found if key in v), found[0] if found else None)
    if not isinstance(value, dict):
        raise JudgeOutputError(f"no JSON object in the reply: {text[:120]!r}")
    return value


def _cut_rubric(text: str) -> dict | None:
    """A rubric reply cut off by max_tokens inside its reasons: the complete scores and the reasons so far."""
    scores = re.search(r'"scores"\s*:\s*(?=\{)', text)
    if not scores:
        return None
    try:
        value, end = json.JSONDecoder().raw_decode(text, scores.end())
    except json.JSONDecodeError:
        return None
    reasons = re.match(r'\s*,\s*"reasons?"\s*:\s*"((?:[^"\\]|\\.)*)\\?$', text[end:], re.S)
    if not reasons or not reasons.group(1).strip():
        return {"scores": value, "reasons": ""}
    try:
        partial = json.loads(f'"{reasons.group(1)}"')
    except json.JSONDecodeError:  # cut inside an escape sequence
        partial = reasons.group(1)
    return {"scores": value, "reasons": partial.rstrip() + " […]"}


def _criterion(key: str) -> str:
    return re.sub(r"[\s-]+", "_", str(key).strip().lower())


def _score(value, criterion: str) -> int:
    if isinstance(value, str) and (match := re.fullmatch(r"\s*(\d+)\s*(?:/\s*7\s*)?", value)):
        value = int(match.group(1))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 7:
        raise JudgeOutputError(f"score {criterion}={value!r} is not an integer from 1 to 7")
    return value


def parse_rubric(text: str) -> dict:
    """{"scores": {criterion: int 1-7}, "reasons": str} from the judge's reply, or JudgeOutputError."""
    try:
        data = json_object(text, "scores")
    except JudgeOutputError:
        if (data := _cut_rubric(text)) is None:
            raise
    if "scores" not in data:  # cut off by max_tokens after its scores
        data = _cut_rubric(text) or data
    scores = data.get("scores")
    if not isinstance(scores, dict):
        raise JudgeOutputError("the reply has no \"scores\" object")
    scores = {_criterion(k): v for k, v in scores.items()}
    missing = [c for c in CRITERIA if c not in scores]
    if missing:
        raise JudgeOutputError(f"scores lack {', '.join(missing)}")
    reasons = data.get("reasons", data.get("reason", ""))
    if isinstance(reasons, dict):  # per-criterion reasons: keep them all, in criterion order
        reasons = " ".join(f"{k}: {v}" for k, v in reasons.items())
    if isinstance(reasons, list):
        reasons = " ".join(str(r).strip() for r in reasons)
    if not isinstance(reasons, str) or not reasons.strip():
        raise JudgeOutputError("the reply gives no \"reasons\"")
    return {"scores": {c: _score(scores[c], c) for c in CRITERIA}, "reasons": reasons.strip()}


def parse_pairwise(text: str) -> dict:
    """{"winner": "A" | "B" | "tie", "reason": str} from the judge's reply, or JudgeOutputError."""
    data = json_object(text, "winner")
    written = str(data.get("winner", "")).strip().lower()
    # "Answer B", "Réponse A", "B.": the slot letter, with the words a judge puts around it
    written = re.sub(r"^(?:answer|réponse|reponse|assistant)\s+|[.!]+$", "", written).strip()
    winner = {"a": "A", "b": "B", "tie": "tie", "égalité": "tie", "egalite": "tie"}.get(written, written)
    if winner not in WINNERS:
        raise JudgeOutputError(f"winner {data.get('winner')!r} is not A, B or tie")
    return {"winner": winner, "reason": str(data.get("reason", "")).strip()}


def pairwise_verdict(base_first: dict, tuned_first: dict) -> str:
    """'tuned', 'base' or 'tie' from the two orders (A=base/B=tuned, then A=tuned/B=base): a win counts
    only when both orders agree, so a judge that always picks one position yields a tie."""
    first = {"A": "base", "B": "tuned"}.get(base_first.get("winner"), "tie")
    second = {"A": "tuned", "B": "base"}.get(tuned_first.get("winner"), "tie")
    return first if first == second else "tie"


class Judge:
    """Asks an LLMClient for rubric scores and pairwise preferences; answers cached in a Store."""

    def __init__(self, client: LLMClient, settings: JudgeSettings, store: Store | None = None):
        self.client, self.settings, self.store = client, settings, store
        self.rubric_prompt = load_prompt("judge_rubric", settings.language)
        self.pairwise_prompt = load_prompt("judge_pairwise", settings.language)
        self.asked = 0  # calls that reached the client (cache misses)

    def rubric(self, question: str, answer: str) -> dict:
        """{"scores", "reasons"} for one answer, or {"error", "raw"} when the judge never replied well."""
        return self._ask(self.rubric_prompt, {"question": question, "answer": answer},
                         rubric_schema(self.settings.reasons_max_chars), parse_rubric)

    def pairwise(self, question: str, answer_a: str, answer_b: str) -> dict:
        """{"winner", "reason"} for one order of the two answers, or {"error", "raw"}."""
        return self._ask(self.pairwise_prompt, {"question": question, "answer_a": answer_a, "answer_b": answer_b},
                         pairwise_schema(self.settings.reasons_max_chars), parse_pairwise)

    def compare(self, question: str, base: str, tuned: str) -> dict:
        """Pairwise preference asked in both orders; the verdict counts a win only when they agree."""
        base_first = self.pairwise(question, base, tuned)
        tuned_first = self.pairwise(question, tuned, base)
        return {"base_first": base_first, "tuned_first": tuned_first,
                "verdict": pairwise_verdict(base_first, tuned_first)}

    def _ask(self, prompt, values: dict, schema: dict, parse) -> dict:
        s = self.settings
        key = item_key(STAGE, prompt.version, self.client.model_id,
                       {**values, "name": s.name, "persona": s.persona, "schema": schema})
        if self.store is not None and key in self.store:
            return self.store.get(key)
        messages = prompt.messages(name=s.name, persona=s.persona, **values)
        error, text = "", ""
        for _ in range(1 + max(0, s.retries)):
            text = self.client.chat(messages, json_schema=schema, temperature=s.temperature,
                                    max_tokens=s.max_tokens, seed=s.seed).text
            self.asked += 1
            try:
                result = parse(text)
            except JudgeOutputError as exc:
                error = str(exc)
                if self.store is not None:
                    self.store.reject(key, error, text)
                messages = messages + [  # say what was wrong: a greedy judge would otherwise repeat itself
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": f"Réponse invalide ({error}). Réponds uniquement par l'objet "
                                                f"JSON demandé."}]
                continue
            if self.store is not None:
                self.store.put(key, result)
            return result
        return {"error": error, "raw": text}


def summarize_rubric(results: list[dict]) -> dict:
    """Mean score per criterion (and overall) over the replies that parsed; errors counted apart."""
    scored = [r["scores"] for r in results if "scores" in r]
    out = {"n": len(scored), "errors": len(results) - len(scored)}
    for c in CRITERIA:
        out[c] = statistics.fmean(s[c] for s in scored) if scored else None
    out["overall"] = statistics.fmean(statistics.fmean(s.values()) for s in scored) if scored else None
    return out


def summarize_pairwise(comparisons: list[dict]) -> dict:
    """Wins of each model, ties, the fine-tuned win rate, and how often the judge just picked a position."""
    verdicts = [c["verdict"] for c in comparisons]
    same_slot = sum(c["base_first"].get("winner") in ("A", "B")
                    and c["base_first"].get("winner") == c["tuned_first"].get("winner") for c in comparisons)
    n = len(verdicts)
    return {"n": n, "tuned": verdicts.count("tuned"), "base": verdicts.count("base"), "tie": verdicts.count("tie"),
            "tuned_win_rate": verdicts.count("tuned") / n if n else None,
            "position_bias": same_slot / n if n else None}
