"""How much of the character's speech multi-turn rows train: our per-turn mask vs mlx-lm's own `--mask-prompt`.

Conversations of 2 to 4 exchanges (as `generate --turns 4` writes them; answers of 50-90 words), the persona
folded into the last question as `prepare` writes it for Mistral, go through the tiny Mistral's chat template
(built here, about two seconds). For each row we count the tokens of the assistant turns that get loss: mlx-lm's
ChatDataset with mask_prompt (the peer: everything after the conversation minus its last message) and our
`assistant_token_mask` (every assistant turn). Both counts include each turn's end-of-turn token.

Run: python bench/turn_mask_coverage.py  (a few seconds, no training)
The last line is `ratio: X` = assistant tokens trained by ours / by mlx-lm's mask_prompt (>1: more of the
character's answers learnt per row); the lines above give the share of all assistant tokens each trains. With
answers of like lengths, X is about the mean number of exchanges per row (3 here); measured: 3.00.
"""

from __future__ import annotations

import sys
import tempfile
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dantes_mlx.models.tiny import build_tiny_model  # noqa: E402
from dantes_mlx.train.data import assistant_token_mask  # noqa: E402

SENTENCES = ["La mer m'a appris la patience, monsieur, car elle rend tout ce qu'on lui confie.",
             "Quatorze années au château d'If m'ont enseigné que l'attente est une arme.",
             "Je ne hais point ceux qui m'ont trahi ; je leur rends seulement ce qu'ils m'ont donné.",
             "Dieu seul sait l'heure, mais l'homme patient sait s'y préparer.",
             "C'est ainsi que j'ai compris que toute la sagesse humaine tient en deux mots."]
PERSONA = "Tu es Edmond Dantès, marin marseillais devenu comte de Monte-Cristo."


def conversation(seed: int) -> list[dict]:
    """2 to 4 exchanges, answers of 4 to 6 sentences, the persona in front of the last question."""
    turns = 2 + seed % 3
    messages = []
    for t in range(turns):
        answer = " ".join(SENTENCES[(seed + t + k) % len(SENTENCES)] for k in range(4 + (seed + t) % 3))
        messages += [{"role": "user", "content": f"Question {t} de la scène {seed} : et ensuite ?"},
                     {"role": "assistant", "content": answer}]
    last_user = len(messages) - 2
    messages[last_user]["content"] = f"{PERSONA}\n\n{messages[last_user]['content']}"
    return messages


def main() -> None:
    from mlx_lm.tuner.datasets import create_dataset
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = AutoTokenizer.from_pretrained(str(build_tiny_model(Path(tmp) / "model")))
    rows = [{"messages": conversation(seed)} for seed in range(60)]
    peer_set = create_dataset(rows, tokenizer, types.SimpleNamespace(mask_prompt=True))
    ours = peer = total = 0
    for i, row in enumerate(rows):
        ids, mask = assistant_token_mask(tokenizer, row["messages"])
        peer_ids, offset = peer_set.process(peer_set[i])
        assert peer_ids == ids
        ours += sum(mask)
        total += sum(mask)  # the mask covers exactly the assistant turns (tests/train/test_train_turns.py checks it)
        peer += sum(mask[offset:])  # of the assistant tokens, those mlx-lm trains (it also trains nothing else)
    print(f"{len(rows)} conversations of 2-4 exchanges, {total} assistant tokens")
    print(f"mlx-lm --mask-prompt trains {peer} of them ({100 * peer / total:.1f}%): the last answer only")
    print(f"dantes-mlx's per-turn mask trains {ours} ({100 * ours / total:.1f}%): every answer")
    print(f"ratio: {ours / peer:.2f}")


if __name__ == "__main__":
    main()
