"""LLM-as-judge: a 1-7 rubric with reasons, and pairwise preference asked in both orders to cancel order bias."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass

from dantes_mlx.generate import load_prompt
from dantes_mlx.llm.base import LLMClient
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


def json_object(text: str) -> dict:
    """The reply as a JSON object: the whole text, else the first object in it (a model may add prose)."""
    text = text.strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        decoder, value = json.JSONDecoder(), None
        for start in (i for i, ch in enumerate(text) if ch == "{"):
            try:
                value = decoder.raw_decode(text, start)[0]
                break
            except json.JSONDecodeError:
                continue
    if not isinstance(value, dict):
        raise JudgeOutputError(f"no JSON object in the reply: {text[:120]!r}")
    return value


def _score(value, criterion: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 7:
        raise JudgeOutputError(f"score {criterion}={value!r} is not an integer from 1 to 7")
    return value


def parse_rubric(text: str) -> dict:
    """{"scores": {criterion: int 1-7}, "reasons": str} from the judge's reply, or JudgeOutputError."""
    data = json_object(text)
    scores = data.get("scores")
    if not isinstance(scores, dict):
        raise JudgeOutputError("the reply has no \"scores\" object")
    missing = [c for c in CRITERIA if c not in scores]
    if missing:
        raise JudgeOutputError(f"scores lack {', '.join(missing)}")
    reasons = data.get("reasons", "")
    if isinstance(reasons, dict):  # per-criterion reasons: keep them all, in criterion order
        reasons = " ".join(f"{k}: {v}" for k, v in reasons.items())
    if not isinstance(reasons, str) or not reasons.strip():
        raise JudgeOutputError("the reply gives no \"reasons\"")
    return {"scores": {c: _score(scores[c], c) for c in CRITERIA}, "reasons": reasons.strip()}


def parse_pairwise(text: str) -> dict:
    """{"winner": "A" | "B" | "tie", "reason": str} from the judge's reply, or JudgeOutputError."""
    data = json_object(text)
    winner = str(data.get("winner", "")).strip()
    winner = {"a": "A", "b": "B", "tie": "tie", "égalité": "tie", "egalite": "tie"}.get(winner.lower(), winner)
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
        self.rubric_prompt = load_prompt("judge_rubric", settings.language, data_fields=("question", "answer"))
        self.pairwise_prompt = load_prompt("judge_pairwise", settings.language,
                                           data_fields=("question", "answer_a", "answer_b"))
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
