"""Multi-turn rows: every assistant turn gets loss in the mlx backend (mask, batches, loss), and training on them.

In-process, no network: the tiny Mistral (its [INST] template) comes from the `tiny_model_dir` fixture.
Run: python -m pytest tests/train/test_train_turns.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dantes_mlx.errors import InputError
from dantes_mlx.train.backends.mlx_turns import TurnMaskDataset, iterate_masked_batches, masked_loss, pad_batch
from dantes_mlx.train.data import assistant_token_mask, assistant_turns, first_trained
from dantes_mlx.train.metrics import MetricsLog
from dantes_mlx.train.backends.mlx import MLXBackend

PERSONA = "Tu es Edmond Dantès."
EXCHANGES = [("Qui êtes-vous ?", "Je suis Edmond Dantès, marin de Marseille."),
             ("Et votre père ?", "Mon père vivait pauvrement allées de Meilhan."),
             ("Que voulez-vous ?", "Je veux la justice, et rien d'autre.")]


def conversation(n: int = 3, shift: int = 0) -> list[dict]:
    """n exchanges, the persona folded into the first question as prepare writes it for Mistral."""
    messages = []
    for i in range(n):
        q, a = EXCHANGES[(i + shift) % len(EXCHANGES)]
        messages += [{"role": "user", "content": f"{PERSONA}\n\n{q}" if i == 0 else q},
                     {"role": "assistant", "content": a}]
    return messages


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def trained_runs(ids: list[int], mask: list[int]) -> list[list[int]]:
    """The token ids of each maximal run of trained tokens."""
    runs, current = [], []
    for token, bit in zip(ids, mask):
        if bit:
            current.append(token)
        elif current:
            runs, current = runs + [current], []
    return runs + ([current] if current else [])


def check_every_turn_trained(tokenizer, messages: list[dict], ids: list[int], mask: list[int]) -> list[int]:
    """Each assistant turn is one trained run holding its words; no user or system word is trained. Returns the
    trained token count per assistant turn."""
    runs = trained_runs(ids, mask)
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    assert len(runs) == len(answers)
    for run, answer in zip(runs, answers):
        text = tokenizer.decode(run, skip_special_tokens=True).strip()
        assert text == answer
    untrained = tokenizer.decode([t for t, bit in zip(ids, mask) if not bit], skip_special_tokens=True)
    for message in messages:
        if message["role"] != "assistant":
            assert message["content"].split("\n\n")[-1] in untrained
    return [len(run) for run in runs]


def test_the_mask_trains_every_assistant_turn_and_no_user_token(tokenizer):
    messages = conversation(3)
    ids, mask = assistant_token_mask(tokenizer, messages)
    counts = check_every_turn_trained(tokenizer, messages, ids, mask)
    assert len(counts) == 3 and all(n >= len(a.split()) for n, (_, a) in zip(counts, EXCHANGES))
    assert ids == list(tokenizer.apply_chat_template(messages, return_dict=False))
    # mlx-lm's mask_prompt trains only what follows the conversation minus its last message
    offset = len(tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, return_dict=False))
    assert sum(mask[offset:]) == counts[-1] and sum(mask) == sum(counts) > counts[-1]
    assert first_trained(mask) == len(tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True,
                                                                    return_dict=False))
    assert assistant_turns(messages) == 3


def test_batches_and_loss_count_the_tokens_of_every_turn(tokenizer):
    """Through the dataset, the padded batches and the loss: the trained token count is every turn's."""
    import mlx.core as mx
    from mlx_lm.tuner.datasets import CacheDataset

    rows = [{"messages": conversation(n, shift)} for n, shift in ((2, 0), (3, 1), (2, 2), (3, 0))]
    dataset = CacheDataset(TurnMaskDataset(rows, tokenizer))
    expected = 0
    for i, row in enumerate(rows):
        ids, mask = dataset[i]
        expected += sum(check_every_turn_trained(tokenizer, row["messages"], ids, mask)[:])
    batches = list(iterate_masked_batches(dataset, 4, 2048, seed=0))
    assert len(batches) == 1
    ids, mask = batches[0]
    assert ids.shape == mask.shape and ids.shape[1] % 32 == 1
    assert int(mask.sum().item()) == expected

    class Uniform:  # equal logits: the loss is log(vocab) per trained target, whatever the mask
        def __call__(self, inputs):
            return mx.zeros((*inputs.shape, 1024))

    loss, ntoks = masked_loss(Uniform(), ids, mask)
    first_tokens = int(mask[:, 0].sum().item())  # a row's first token is never a target (it is BOS: untrained)
    assert first_tokens == 0 and int(ntoks.item()) == expected
    assert abs(loss.item() - float(mx.log(mx.array(1024.0)).item())) < 1e-4


def test_truncation_keeps_the_mask_aligned_with_the_ids():
    ids, mask = pad_batch([([5, 6, 7, 8, 9], [0, 1, 1, 0, 1]), ([5, 6], [0, 1])], max_seq_length=4)
    assert ids.tolist() == [[5, 6, 7, 8], [5, 6, 0, 0]]
    assert mask.tolist() == [[0, 1, 1, 0], [0, 1, 0, 0]]


def test_a_template_that_rewrites_earlier_turns_is_refused():
    class DropsEarlierAnswers:  # as reasoning templates that strip past <think> blocks: turn 1 changes later
        def apply_chat_template(self, messages, tools=None, return_dict=False, add_generation_prompt=False):
            last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
            text = [len(m["content"]) if m["role"] != "assistant" or i == last else 0
                    for i, m in enumerate(messages)]
            return text + ([1] if add_generation_prompt else [])

    with pytest.raises(InputError) as err:
        assistant_token_mask(DropsEarlierAnswers(), conversation(2))
    assert "assistant turn 1" in str(err.value) and "--turns 1" in str(err.value)


def write_rows(folder: Path, name: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                          encoding="utf-8")


@pytest.mark.slow
def test_training_on_multi_turn_rows_lowers_the_loss(tiny_model_dir, tmp_path, capfd):
    import yaml

    from dantes_mlx.config import TrainConfig

    rows = [{"messages": conversation(2 + i % 2, i), "source_id": f"c{i % 3}"} for i in range(16)]
    data = tmp_path / "data"
    write_rows(data, "train", rows)
    write_rows(data, "valid", rows[:8])
    cfg = TrainConfig(backend="mlx", base_model=str(tiny_model_dir), num_layers=-1, iters=20, learning_rate=1e-3,
                      batch_size=4, warmup_steps=0, dropout=0.0, steps_per_report=5, steps_per_eval=10,
                      save_every=10, val_batches=2, lr_schedule="constant")
    (tmp_path / "adapters").mkdir()
    result = MLXBackend().train(cfg, data, tmp_path / "adapters")  # the backend itself: whatever is installed
    assert "the loss covers every assistant turn" in capfd.readouterr().err
    losses = [r["train_loss"] for r in MetricsLog(tmp_path / "adapters" / "metrics.jsonl").rows() if "train_loss" in r]
    vals = [r["val_loss"] for r in MetricsLog(tmp_path / "adapters" / "metrics.jsonl").rows() if "val_loss" in r]
    assert len(losses) == 4 and losses[-1] < 0.5 * losses[0]
    assert vals[-1] < 0.5 * vals[0] and result.val_loss == vals[-1]
    derived = yaml.safe_load((tmp_path / "adapters" / "train_config.yaml").read_text())["derived"]
    assert derived["every_assistant_turn"] is True and derived["mask_prompt"] is True


@pytest.mark.slow
def test_generated_conversations_go_through_prepare_and_train_every_turn(tiny_model_dir, tmp_path):
    """generate --turns (fake LLM) -> prepare with the tiny Mistral tokenizer (persona folded into the last
    question) -> the mlx backend: every answer of every conversation is trained."""
    from mlx_lm.tuner.datasets import CacheDataset
    from transformers import AutoTokenizer

    from dantes_mlx.config import DANTES_PERSONA, CharacterConfig, GenerateConfig, PrepareConfig, TrainConfig
    from dantes_mlx.dataset.prepare import prepare
    from dantes_mlx.generate.pairs import load_citations
    from dantes_mlx.generate.turns import generate_conversations
    from dantes_mlx.llm.fake import FakeLLM

    citations = [{"id": f"c{i}", "citation": f"--Citation numéro {i}, monsieur.", "contexte": "Au port",
                  "book": "17989", "chapter": i // 4, "start": i * 100, "end": i * 100 + 30} for i in range(24)]
    source = tmp_path / "c.jsonl"
    source.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in citations), encoding="utf-8")

    calls = iter(range(1000))

    def scene(messages):
        n = next(calls)
        asked = ["Que s'est-il passé ce jour-là ?", "Et qu'avez-vous ressenti alors ?", "Pourquoi vous taire ?"]
        return {"exchanges": [{"question": asked[t],
                               "answer": " ".join([f"Mon ami, voici la réponse {t} à la scène {n}."]
                                                  + [EXCHANGES[(t + k) % 3][1] for k in range(8)])}
                              for t in range(3)]}

    pairs = tmp_path / "conv.jsonl"
    generate_conversations(load_citations([source]), FakeLLM(default=scene), pairs, GenerateConfig(turns=3),
                           CharacterConfig(), progress=False)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    data = tmp_path / "dataset"
    report = prepare([pairs], data, PrepareConfig(split="50/50", dedupe=False), DANTES_PERSONA,
                     tokenizer)  # the fake answers are near duplicates of each other
    assert report.counts["train"] >= 4 and not report.validation.errors
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(assistant_turns(r["messages"]) >= 2 for r in rows)
    dataset = CacheDataset(TurnMaskDataset(rows, tokenizer))
    for i, row in enumerate(rows):
        counts = check_every_turn_trained(tokenizer, row["messages"], *dataset[i])
        assert len(counts) == assistant_turns(row["messages"])
    cfg = TrainConfig(backend="mlx", base_model=str(tiny_model_dir), num_layers=-1, iters=4, batch_size=2,
                      save_every=4, steps_per_report=2, steps_per_eval=4, val_batches=1, warmup_steps=0)
    (tmp_path / "adapters").mkdir()
    result = MLXBackend().train(cfg, data, tmp_path / "adapters")
    assert result.steps == 4 and result.train_loss == result.train_loss
