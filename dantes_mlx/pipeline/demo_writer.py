"""The demo's stand-in for the generator LLM: fills fixed French templates, clearly labelled as such.

It implements the LLMClient protocol so the demo runs the real `generate` stage (prompt, store,
parser, filters) offline; the pairs it writes only show the plumbing, not what an LLM would write.
"""

from __future__ import annotations

import hashlib
import json
import re

from dantes_mlx.llm.base import ChatResult

MODEL_ID = "demo-template (stand-in for the LLM, not a model)"

QUESTIONS = [
    "Que répondriez-vous à qui vous demanderait : {topic} ?",
    "Parlez-moi de ce moment : {scene}",
    "Monsieur, qu'aviez-vous au cœur quand vous avez dit cela ?",
    "Si vous deviez le redire aujourd'hui, que diriez-vous ?",
    "Quelle leçon tirez-vous de ces paroles ?",
]
OPENINGS = [
    "Vous me posez là une question que je me suis souvent posée moi-même.",
    "Je vous répondrai avec franchise, car vous méritez la vérité.",
    "Il y a dans votre question plus de sagesse que vous ne le croyez.",
]
CLOSINGS = [
    "J'ai appris, dans la solitude et le silence, que toute la sagesse humaine tient dans ces deux mots : "
    "attendre et espérer. C'est ce que je vous souhaite de comprendre un jour.",
    "La patience m'a enseigné plus que tous les livres, et la mer plus que tous les maîtres. "
    "Gardez ces paroles, monsieur, elles m'ont coûté assez cher.",
    "Dieu seul connaît le fond des cœurs ; moi, je ne connais que ce que j'ai souffert. "
    "Mais ce que j'ai souffert, je ne l'oublierai jamais.",
]


def _field(text: str, name: str) -> str:
    match = re.search(rf"^{name}\s*:\s*(.*)$", text, re.MULTILINE | re.DOTALL)
    if not match:
        return ""
    value = match.group(1)
    nxt = re.search(r"^\w+\s*:", value, re.MULTILINE)
    return (value[:nxt.start()] if nxt else value).strip()


def _clean_quote(citation: str) -> str:
    return re.sub(r"^(?:--|[—–-])\s*", "", citation).strip().strip("«» ")


def template_pairs(citation: str, contexte: str, k: int) -> list[dict]:
    """k deterministic (question, developed answer) pairs built around one citation."""
    quote = _clean_quote(citation)
    seed = int(hashlib.sha256(quote.encode("utf-8")).hexdigest(), 16)
    topic = " ".join(quote.split()[:8]).rstrip(",;:.!?") or "votre passé"
    scene = " ".join(contexte.split()[-14:]) or "ce jour-là"
    pairs = []
    for i in range(k):
        question = QUESTIONS[(seed + i) % len(QUESTIONS)].format(topic=topic.lower(), scene=scene)
        answer = " ".join([OPENINGS[(seed + i) % len(OPENINGS)],
                           f"Ce jour-là, je l'ai dit ainsi : « {quote} »",
                           CLOSINGS[(seed // 7 + i) % len(CLOSINGS)]])
        pairs.append({"instruction": question, "response": answer})
    return pairs


class DemoPairWriter:
    """An LLMClient that answers the generate prompt from templates (demo only)."""

    model_id = MODEL_ID

    def chat(self, messages: list[dict], json_schema: dict | None = None, **sampling) -> ChatResult:
        data = messages[-1]["content"]
        k = 3
        if json_schema:
            k = json_schema.get("properties", {}).get("pairs", {}).get("minItems", 3)
        pairs = template_pairs(_field(data, "Citation"), _field(data, "Contexte"), k)
        text = json.dumps({"pairs": pairs}, ensure_ascii=False)
        prompt = sum(len(m["content"].split()) for m in messages)
        return ChatResult(text=text, prompt_tokens=prompt, evaluated_tokens=prompt,
                          completion_tokens=len(text.split()), finish_reason="stop")
