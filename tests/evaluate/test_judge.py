"""LLM-as-judge: rubric parsing, malformed replies, the Store cache, position swapping (FakeLLM), and
schema-forced scores from the tiny GGUF through LlamaCppClient.

In-process, no network. Run: /work/venv/bin/python -m pytest tests/evaluate/test_judge.py -q
"""

from __future__ import annotations

import pytest

from dantes_mlx.evaluate.judge import (CRITERIA, Judge, JudgeOutputError, JudgeSettings, pairwise_verdict,
                                       parse_pairwise, parse_rubric, rubric_schema, summarize_pairwise,
                                       summarize_rubric)
from dantes_mlx.llm.fake import FakeLLM, fake_from_function
from dantes_mlx.store import Store

SETTINGS = JudgeSettings(name="Edmond Dantès", persona="Tu es Edmond Dantès.")
GOOD = {"scores": {"fidelity": 6, "style": 5, "coherence": 7, "in_character": 4},
        "reasons": "Il vouvoie et parle du château d'If, mais cite une date fausse."}
BASE, TUNED = "Je suis un assistant IA.", "Je suis Edmond Dantès, et je vous salue."


def test_parse_rubric_keeps_scores_and_reasons():
    parsed = parse_rubric('Voici mon verdict : {"scores": {"fidelity": 6, "style": "5", "coherence": 7.0, '
                          '"in_character": 4}, "reasons": " Il vouvoie. "} Fin.')
    assert parsed == {"scores": {"fidelity": 6, "style": 5, "coherence": 7, "in_character": 4},
                      "reasons": "Il vouvoie."}
    per_criterion = parse_rubric('{"scores": {"fidelity": 1, "style": 1, "coherence": 1, "in_character": 1}, '
                                 '"reasons": {"style": "anglais", "fidelity": "inventé"}}')
    assert per_criterion["reasons"] == "style: anglais fidelity: inventé"


@pytest.mark.parametrize("reply, message", [
    ("pas de JSON ici", "no JSON object"),
    ('{"scores": {"fidelity": 6, "style": 5, "coherence": 7}, "reasons": "x"}', "lack in_character"),
    ('{"scores": {"fidelity": 9, "style": 5, "coherence": 7, "in_character": 4}, "reasons": "x"}', "fidelity=9"),
    ('{"scores": {"fidelity": true, "style": 5, "coherence": 7, "in_character": 4}, "reasons": "x"}', "fidelity"),
    ('{"scores": {"fidelity": 2, "style": 5, "coherence": 7, "in_character": 4}, "reasons": ""}', "reasons"),
    ('{"scores": [6, 5, 7, 4], "reasons": "x"}', "scores"),
    ('{"scores": {"fidelity": 2, "style": 5, "coherence": 7, "in_charac', "no JSON object"),  # cut off
])
def test_parse_rubric_rejects_malformed(reply, message):
    with pytest.raises(JudgeOutputError, match=message):
        parse_rubric(reply)


SCORES_JSON = '"scores": {"fidelity": 6, "style": 5, "coherence": 7, "in_character": 4}'


@pytest.mark.parametrize("reply, reasons", [
    # prose that shows the format before the real answer: the object with "scores" is the one kept
    ('Format : {"winner": "A"}. Mon avis : {' + SCORES_JSON + ', "reasons": "Il vouvoie."}', "Il vouvoie."),
    # criteria written as labels, scores as "n/7", reasons as a list, "reason" for "reasons"
    ('{"scores": {"Fidelity": 6, "Style": "5/7", "Coherence": 7, "In character": 4}, "reasons": ["Il vouvoie.", '
     '"Il cite If."]}', "Il vouvoie. Il cite If."),
    ('{' + SCORES_JSON + ', "reason": "Il vouvoie."}', "Il vouvoie."),
    # cut off by max_tokens inside the reasons: the scores came first and are kept
    ('{' + SCORES_JSON + ', "reasons": "Il vouvoie et parle du ch\\u00e2teau d\'If, mais', "Il vouvoie et parle du château d'If, mais […]"),
])
def test_parse_rubric_reads_messy_but_complete_verdicts(reply, reasons):
    assert parse_rubric(reply) == {"scores": GOOD["scores"], "reasons": reasons}


def test_parse_rubric_still_refuses_a_reply_cut_before_its_reasons():
    with pytest.raises(JudgeOutputError, match="reasons"):
        parse_rubric('{' + SCORES_JSON + ', "reas')


@pytest.mark.parametrize("written, winner", [("Answer B", "B"), ("Réponse A", "A"), ("B.", "B"), (" a ", "A"),
                                              ("Égalité", "tie"), ("TIE", "tie"), ("réponse B.", "B")])
def test_parse_pairwise_accepts_the_ways_a_judge_names_the_winner(written, winner):
    assert parse_pairwise('{"winner": "%s", "reason": "x"}' % written)["winner"] == winner


def test_parse_pairwise():
    assert parse_pairwise('{"winner": "b", "reason": "plus soutenu"}') == {"winner": "B", "reason": "plus soutenu"}
    assert parse_pairwise('{"winner": "égalité", "reason": ""}')["winner"] == "tie"
    with pytest.raises(JudgeOutputError, match="not A, B or tie"):
        parse_pairwise('{"winner": "C"}')


def test_rubric_through_fake_llm_forces_the_schema_and_keeps_reasons(tmp_path):
    fake = FakeLLM([GOOD])
    judge = Judge(fake, SETTINGS, Store(tmp_path / "judge.jsonl"))
    result = judge.rubric("Qui êtes-vous ?", TUNED)
    assert result == GOOD
    call = fake.calls[0]
    assert call["json_schema"] == rubric_schema(400)
    assert call["json_schema"]["properties"]["scores"]["properties"]["style"]["enum"] == [1, 2, 3, 4, 5, 6, 7]
    assert call["sampling"] == {"temperature": 0.0, "max_tokens": 512, "seed": 0}
    system, user = call["messages"]
    assert "Edmond Dantès" in system["content"] and "Tu es Edmond Dantès." in system["content"]
    assert TUNED in user["content"] and "Qui êtes-vous ?" in user["content"] and TUNED not in system["content"]


def test_malformed_reply_is_asked_again_with_the_error_then_given_up(tmp_path):
    store = Store(tmp_path / "judge.jsonl")
    fake = FakeLLM(["Je donne 6/7.", GOOD])
    assert Judge(fake, SETTINGS, store).rubric("Q ?", TUNED) == GOOD
    retry = fake.calls[1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": "Je donne 6/7."} and "invalide" in retry[-1]["content"]
    assert [r["payload"] for r in store.rejects()] == ["Je donne 6/7."]  # the bad reply is kept with its reason

    stubborn = FakeLLM(default="toujours pas de JSON")
    failed = Judge(stubborn, SETTINGS, store).rubric("Autre question ?", TUNED)
    assert failed == {"error": "no JSON object in the reply: 'toujours pas de JSON'", "raw": "toujours pas de JSON"}
    assert len(stubborn.calls) == 2  # one retry (settings.retries), then the failure is reported, not cached
    summary = summarize_rubric([GOOD, failed])
    assert summary["n"] == 1 and summary["errors"] == 1 and summary["coherence"] == 7
    assert summary["overall"] == pytest.approx(5.5)


def test_cached_verdicts_are_not_asked_again(tmp_path):
    path = tmp_path / "judge.jsonl"
    first = Judge(FakeLLM([GOOD]), SETTINGS, Store(path))
    first.rubric("Q ?", TUNED)
    empty = FakeLLM([])  # raises if called
    again = Judge(empty, SETTINGS, Store(path))
    assert again.rubric("Q ?", TUNED) == GOOD and again.asked == 0 and not empty.calls
    other = Judge(FakeLLM([GOOD]), SETTINGS, Store(path))
    other.rubric("Q ?", TUNED + " Adieu.")  # another answer is another item
    assert other.asked == 1


def _answer_in_slot(messages, slot: str) -> str:
    user = messages[-1]["content"]
    part = user.split("Réponse A : ")[1]
    return part.split("\nRéponse B : ")[0] if slot == "A" else part.split("\nRéponse B : ")[1]


def test_judge_that_always_picks_position_a_yields_a_tie():
    fake = fake_from_function(lambda messages: {"winner": "A", "reason": "la première"})
    judge = Judge(fake, SETTINGS)
    comparison = judge.compare("Qui êtes-vous ?", BASE, TUNED)
    assert comparison["verdict"] == "tie" and len(fake.calls) == 2
    # Both orders were really asked: base first, then the fine-tuned answer first.
    assert _answer_in_slot(fake.calls[0]["messages"], "A") == BASE
    assert _answer_in_slot(fake.calls[1]["messages"], "A") == TUNED
    summary = summarize_pairwise([comparison])
    assert summary == {"n": 1, "tuned": 0, "base": 0, "tie": 1, "tuned_win_rate": 0.0, "position_bias": 1.0}


def test_judge_preferring_the_fine_tuned_answer_in_both_orders_yields_a_win():
    def prefers_tuned(messages):
        return {"winner": "A" if _answer_in_slot(messages, "A") == TUNED else "B", "reason": "il vouvoie"}

    judge = Judge(fake_from_function(prefers_tuned), SETTINGS)
    comparisons = [judge.compare(q, BASE, TUNED) for q in ("Qui êtes-vous ?", "D'où venez-vous ?")]
    assert [c["verdict"] for c in comparisons] == ["tuned", "tuned"]
    assert comparisons[0]["base_first"]["winner"] == "B" and comparisons[0]["tuned_first"]["winner"] == "A"
    summary = summarize_pairwise(comparisons)
    assert summary["tuned"] == 2 and summary["tuned_win_rate"] == 1.0 and summary["position_bias"] == 0.0


def test_pairwise_verdict_table():
    a, b, tie, err = {"winner": "A"}, {"winner": "B"}, {"winner": "tie"}, {"error": "x"}
    assert pairwise_verdict(a, b) == "base" and pairwise_verdict(b, a) == "tuned"
    assert pairwise_verdict(a, a) == pairwise_verdict(b, b) == pairwise_verdict(tie, a) == "tie"
    assert pairwise_verdict(err, a) == "tie"  # an unusable reply never counts as a win


@pytest.mark.slow
def test_tiny_gguf_judge_scores_are_schema_forced(tiny_gguf, tmp_path):
    from dantes_mlx.llm.llamacpp import LlamaCppClient

    client = LlamaCppClient(str(tiny_gguf), n_ctx=2048, n_threads=2, n_gpu_layers=0, temperature=0.8)
    settings = JudgeSettings(name="Edmond Dantès", persona="Tu es Edmond Dantès.", reasons_max_chars=40,
                             max_tokens=300, temperature=0.8, seed=3)
    judge = Judge(client, settings, Store(tmp_path / "judge.jsonl"))
    try:
        result = judge.rubric("Qui êtes-vous ?", TUNED)
        # A random tiny model says nothing sensible, but the grammar makes its reply parse.
        assert set(result["scores"]) == set(CRITERIA)
        assert all(isinstance(v, int) and 1 <= v <= 7 for v in result["scores"].values())
        # maxLength bounds grammar characters; a byte-fallback token split mid-character decodes as U+FFFDs.
        assert isinstance(result["reasons"], str) and 1 <= len(result["reasons"]) <= 80
        pair = judge.pairwise("Qui êtes-vous ?", BASE, TUNED)
        assert pair["winner"] in ("A", "B", "tie")
        assert judge.asked == 2  # no retry was needed
    finally:
        client.close()
