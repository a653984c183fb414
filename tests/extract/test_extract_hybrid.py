"""The hybrid method: the rules first, the LLM asked only what they leave open, with control questions (fakes, no network)."""

import json
import re

import pytest
from click.testing import CliRunner

from dantes_mlx.config import CharacterConfig, ExtractConfig
from dantes_mlx.fr.dialogue import find_quotations
from dantes_mlx.errors import ModelError
from dantes_mlx.extract.chunks import Book
from dantes_mlx.extract.hybrid_method import extract_hybrid, questions
from dantes_mlx.llm.fake import FakeLLM, fake_from_function

SCENE = ("Pierre et Marie marchaient le long du quai.\n\n"
         "— Il fait froid, dit Pierre.\n\n"
         "— Oui, répondit Marie.\n\n"
         "— Rentrons.\n\n"
         "— Pas encore.\n\n"
         "Ils s'arrêtèrent devant la mer. Pierre pensait à sa mère, restée seule à la ferme. Que deviendrait-elle ?\n\n"
         "— Tu rêves ? demanda Marie.\n")
PIERRE = CharacterConfig(name="Pierre", aliases=[])


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _answering(by_words: dict[str, str], kind: str = "parole"):
    """A fake answering each numbered question by the first key of by_words found in it ("autre" otherwise)."""
    def answer(messages):
        asked = re.findall(r"^\d+\. (.*)$", messages[-1]["content"], re.M)
        picks = [next((who for words, who in by_words.items() if words in q), "autre") for q in asked]
        return {"answers": [{"speaker": who, "kind": "pensée" if "Paragraphe" in q else kind}
                            for who, q in zip(picks, asked)]}
    return fake_from_function(answer, "fake-hybrid")


def test_only_what_the_rules_leave_open_is_asked():
    book = Book("b", SCENE)
    asked = questions(book, find_quotations(SCENE), PIERRE)
    said = [(q.kind, SCENE[q.start:q.end][:20]) for q in asked]
    # "Il fait froid, dit Pierre." and "Rentrons." (his turn in the exchange) are the rules'; "Oui, répondit
    # Marie." is settled by its incise; "Pas encore." is only the exchange's turn; the paragraph has a thought cue
    assert said == [("reply", "— Pas encore."), ("narration", "Ils s'arrêtèrent dev")]


def test_answers_add_the_characters_lines_and_a_control_checks_the_model(tmp_path):
    llm = _answering({"Pas encore": "Pierre", "Ils s'arrêtèrent": "Pierre", "« Oui": "Marie"})
    out = tmp_path / "c.jsonl"
    summary = extract_hybrid([Book("b", SCENE)], PIERRE, ExtractConfig(), out, llm, progress=False)
    (call,) = llm.calls
    user = call["messages"][-1]["content"]
    assert "Noms proposés : Marie, Pierre, autre, inconnu" in user  # alphabetical: no place gives a name away
    assert "1. Réplique [1] « Oui » : qui la prononce ?" in user  # the control: its incise gives it to Marie
    assert "[1] — Oui, répondit Marie.\n\n— Rentrons.\n\n[2] — Pas encore.\n\n[3] Ils s'arrêtèrent" in user
    assert call["json_schema"]["properties"]["answers"]["minItems"] == 3
    rows = _rows(out)
    by_text = {r["citation"]: r for r in rows}
    assert by_text["— Il fait froid."]["method"] == "rules" and by_text["— Rentrons."]["method"] == "rules"
    assert by_text["— Pas encore."]["method"] == "hybrid"
    assert by_text["— Pas encore."]["disputed_by_rules"] == "Marie"  # the exchange's turn said Marie
    thought = next(r for r in rows if r["kind"] == "pensée")
    assert thought["citation"].startswith("Ils s'arrêtèrent") and thought["grounding_method"] == "rules+llm"
    assert (summary.method, summary.questions, summary.added, summary.chunks) == ("hybrid", 2, 2, 1)


def test_a_model_that_fails_the_control_question_adds_nothing_and_is_stopped(tmp_path):
    always_him = _answering({"": "Pierre"})  # SmolLM2-135M's way: the first name offered, every time
    out = tmp_path / "c.jsonl"
    extract_hybrid([Book("b", SCENE)], PIERRE, ExtractConfig(check_replies=False), out, always_him, progress=False)
    assert all(r["method"] == "rules" for r in _rows(out))
    rejects = _rows(tmp_path / "c.rejects.jsonl")
    assert [(r["reason"], r["controls"]) for r in rejects] == [("failed_control", [{"expected": "Marie",
                                                                                     "answer": "Pierre"}])]
    with pytest.raises(ModelError, match="fake-hybrid is not following"):  # judged on 3 replies or more
        books = [Book(f"b{i}", SCENE.replace("du quai", f"du quai numéro {i}")) for i in range(3)]
        extract_hybrid(books, PIERRE, ExtractConfig(), tmp_path / "d.jsonl", _answering({"": "Pierre"}), progress=False)


def test_stored_answers_are_reused_and_the_key_covers_what_is_sent(tmp_path):
    out = tmp_path / "c.jsonl"
    answers = {"Pas encore": "Pierre", "« Oui": "Marie"}
    extract_hybrid([Book("b", SCENE)], PIERRE, ExtractConfig(), out, _answering(answers), progress=False)
    first = out.read_text(encoding="utf-8")
    silent = FakeLLM(model_id="fake-hybrid")  # no replies: any call fails the test
    summary = extract_hybrid([Book("b", SCENE)], PIERRE, ExtractConfig(), out, silent, progress=False)
    assert silent.calls == [] and summary.cached == 1 and out.read_text(encoding="utf-8") == first
    other = _answering(answers)
    extract_hybrid([Book("b", SCENE)], CharacterConfig(name="Pierre", aliases=["le jeune homme"]), ExtractConfig(),
                   out, other, progress=False)
    assert len(other.calls) == 1  # other aliases: another system message, asked again


def test_cli_auto_is_hybrid_when_a_model_is_configured(tmp_path, monkeypatch):
    from dantes_mlx.cli import main
    import dantes_mlx.llm as base

    llm = _answering({"Pas encore": "Pierre", "« Oui": "Marie"})
    monkeypatch.setattr(base, "make_client", lambda cfg: llm)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scene.txt").write_text(SCENE, encoding="utf-8")
    result = CliRunner().invoke(main, ["extract", "--input", "scene.txt", "--character", "Pierre", "--model", "m.gguf",
                                       "-o", "c.jsonl", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "(hybrid)" in result.output and "asked about 2 replies and paragraphs" in result.output
    assert "tokens this run" in result.output


def test_cli_hybrid_with_a_failing_model_exits_1_and_keeps_the_previous_citations(tmp_path, monkeypatch):
    from dantes_mlx.cli import main
    import dantes_mlx.llm as base

    def down(messages):
        raise ConnectionError("the server is down")

    monkeypatch.setattr(base, "make_client", lambda cfg: fake_from_function(down, "down"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scene.txt").write_text(SCENE, encoding="utf-8")
    (tmp_path / "c.jsonl").write_text('{"citation": "--Une citation gardée."}\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["extract", "--input", "scene.txt", "--character", "Pierre", "--model", "m.gguf",
                                       "-o", "c.jsonl", "--quiet"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert (tmp_path / "c.jsonl").read_text(encoding="utf-8") == '{"citation": "--Une citation gardée."}\n'
    partial = _rows(tmp_path / "c.partial.jsonl")  # the rules' rows, beside the kept output
    assert partial and all(r["method"] == "rules" for r in partial)
