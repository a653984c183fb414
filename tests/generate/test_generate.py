"""Pair generation: tolerant parser on the real raw outputs, filters, resume, facts/labels, CLI, real clients.

In-process, no network (the OpenAI-compatible server is a fake on 127.0.0.1):
`pytest tests/generate/test_generate.py -q`. The llama.cpp test uses the tiny GGUF fixture `tiny_gguf`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_openai import FakeServer, completion

from dantes_mlx.cli import main
from dantes_mlx.config import CharacterConfig, GenerateConfig
from dantes_mlx.errors import ConfigError, InputError
from dantes_mlx.generate.filters import FilterSettings, filter_group, pair_reason
from dantes_mlx.generate.pairs import GenerateInterrupted, generate_pairs, group_raw_pairs, load_citations, pairs_schema
from dantes_mlx.generate.parser import ParsedPair, parse_pairs
from dantes_mlx.generate.sources import generate_from_facts, labels_to_rows, load_facts
from dantes_mlx.llm.fake import FakeLLM, fake_from_function
from dantes_mlx.llm.prompt import load_prompt
from dantes_mlx.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
RAW_DEV = "reference/raw_generation_outputs.dev.txt"
DANTES = CharacterConfig()
SENTENCES = ["La mer m'a appris la patience, monsieur, car elle rend tout ce qu'on lui confie.",
             "Quatorze années au château d'If m'ont enseigné que l'attente est une arme.",
             "Je ne hais point ceux qui m'ont trahi ; je leur rends seulement ce qu'ils m'ont donné.",
             "Dieu seul sait l'heure, mais l'homme patient sait s'y préparer.",
             "C'est ainsi que j'ai compris que toute la sagesse humaine tient en deux mots."]
CITATIONS = [{"contexte": "Dantès parle à Morrel", "citation": "--Un grand malheur, monsieur Morrel!", "id": "c1",
              "book": "17989", "start": 10, "end": 45},
             {"contexte": "Dantès au château d'If", "citation": "--Attendre et espérer."},
             {"contexte": "Dantès devant Villefort", "citation": "--Je suis innocent, monsieur."}]


def answer(seed: int, words: int = 60) -> str:
    """A French answer of about `words` words, distinct per seed."""
    text, i = [], seed
    while len(" ".join(text).split()) < words:
        text.append(SENTENCES[i % len(SENTENCES)])
        i += 1
    return f"Mon ami, voici ma réponse numéro {seed}. " + " ".join(text)


def good_reply(messages) -> dict:
    """Three distinct questions about the citation in the user message and developed answers."""
    data = messages[-1]["content"]
    questions = [f"Que vous inspire cette parole : « {data[-25:]} » ?",
                 "Comment avez-vous supporté tant d'années de captivité ?",
                 "Quel conseil donneriez-vous à un jeune homme trahi par ses amis ?"]
    return {"pairs": [{"instruction": q, "response": answer(len(data) + i)} for i, q in enumerate(questions)]}


def default_citations(data_dir: str, extract_output: str = "") -> list[Path]:
    """What generate reads by default: extract.output, else the citation files under the data folder."""
    return Workspace(data=Path(data_dir), citations_file=extract_output).citation_files()


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_rows(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def strict_scan(lines: list[str]) -> Counter:
    """Independent count: strict raw_decode at every '{' of every line, complete instruction/response dicts."""
    decoder, found = json.JSONDecoder(), Counter()
    for lineno, line in enumerate(lines, 1):
        for start, char in enumerate(line):
            if char != "{":
                continue
            try:
                obj, _ = decoder.raw_decode(line, start)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("instruction"), str) \
                    and isinstance(obj.get("response"), str):
                found[(lineno, obj["instruction"], obj["response"])] += 1
    return found


# -- the tolerant parser on the real raw outputs -----------------------------------------------------
def test_parser_recovers_every_complete_pair_of_the_raw_dev_file(shared_data):
    text = (shared_data / RAW_DEV).read_text(encoding="utf-8")
    expected = strict_scan(text.split("\n"))
    assert sum(expected.values()) == 1557
    result = parse_pairs(text)
    complete = Counter((p.line, p.instruction, p.response) for p in result.pairs if p.complete)
    assert not expected - complete                    # every strictly complete pair, on its line
    assert sum(complete.values()) == 1557 and all(p.complete for p in result.pairs)
    # The rest is reported with its line: the model's stray commentary on line 682.
    assert {(r.line, r.reason) for r in result.rejects} == {(682, "text outside any JSON object")}
    assert any("We produced 3 JSON objects" in r.text for r in result.rejects)


def test_parser_salvages_cut_off_and_unclosed_objects_of_the_damaged_dev_file(shared_data):
    lines = (shared_data / RAW_DEV).read_text(encoding="utf-8").split("\n")
    original = strict_scan(lines)
    damaged, unclosed, cut = list(lines), set(), set()
    for lineno, line in enumerate(lines, 1):
        body = line.rstrip()
        if not body.endswith('"}'):
            continue
        if lineno % 5 == 0:    # the closing brace lost: both strings complete, object left unclosed
            damaged[lineno - 1], _ = body[:-1], unclosed.add(lineno)
        elif lineno % 7 == 0:  # cut inside the last response: that pair cannot be saved
            last = body.rindex('"response"')
            damaged[lineno - 1], _ = body[:last + 30], cut.add(lineno)
    result = parse_pairs("\n".join(damaged))
    found = Counter((p.line, p.instruction, p.response) for p in result.pairs)
    last_of = {}
    for key in original:
        last_of[key[0]] = key                            # the last object of each line
    lost = {last_of[n] for n in cut}
    assert found == original - Counter(lost)             # nothing lost but the cut responses
    salvaged = {(p.line, p.instruction, p.response) for p in result.pairs if not p.complete}
    assert salvaged == {last_of[n] for n in unclosed} and len(unclosed) > 100
    cut_rejects = {r.line for r in result.rejects if r.reason.startswith("incomplete object")}
    assert cut_rejects == cut and all("no complete response" in r.reason for r in result.rejects
                                      if r.line in cut)


@pytest.mark.parametrize("text, pairs, rejects", [
    ('```json\n{"pairs": [{"instruction": "a", "response": "b"}, {"instruction": "c", "response": "d"}]}\n```',
     [("a", "b", 2, True), ("c", "d", 2, True)], []),
    ('Voici les paires :\n{"instruction":"a","response":"b"}{"instruction":"c","response":"d"} Fin.',
     [("a", "b", 2, True), ("c", "d", 2, True)], [(1, "text outside"), (2, "text outside")]),
    ('{\n  "pairs": [\n    {\n      "instruction": "a",\n      "response": "b"\n    }\n  ]\n}',
     [("a", "b", 1, True)], []),
    ('{"instruction":"a","response":"b"}\n{"instruction":"c","response":"d"\n{"instruction":"e","response":"f"}',
     [("a", "b", 1, True), ("c", "d", 2, False), ("e", "f", 3, True)], []),
    ('{"pairs":[{"instruction":"a","response":"b"},{"instruction":"c","response":"d"},{"instruction":"e","resp',
     [("a", "b", 1, True), ("c", "d", 1, True)], [(1, "incomplete object")]),
    ('{"pairs":[{"instruction":"a","response":"b"},\n{"instruction":"c","response":"d"}',
     [("a", "b", 1, True), ("c", "d", 2, True)], []),
    ('{"instruction":"a","response":"b",}', [("a", "b", 1, False)], []),
    ('{"instruction":"l\\\'homme","response":"b"}', [("l'homme", "b", 1, False)], []),
    ('<think>{"instruction":"brouillon","response":"x"}</think>{"instruction":"a","response":"b"}',
     [("a", "b", 1, True)], []),
    ('{"question":"a","answer":"b"}', [("a", "b", 1, True)], []),
    ('{"foo": 1}\n\n{"instruction": "seule"}', [], [(1, "JSON object without"), (3, "JSON object without")]),
    ('', [], []),
])
def test_parser_on_messy_text(text, pairs, rejects):
    result = parse_pairs(text)
    assert [(p.instruction, p.response, p.line, p.complete) for p in result.pairs] == pairs
    assert [(r.line, r.reason[:len(reason)]) for r, (_, reason) in zip(result.rejects, rejects)] == rejects
    assert len(result.rejects) == len(rejects)


def test_raw_pairs_are_grouped_by_citation_for_leak_free_splits():
    pairs = [ParsedPair("q", "r", line) for line in (1, 1, 1, 2, 3, 4, 6, 6, 6, 6, 8)]
    assert [[p.line for p in g] for g in group_raw_pairs(pairs, 3)] == [[1, 1, 1], [2, 3, 4], [6, 6, 6, 6], [8]]


# -- quality filters -------------------------------------------------------------------------------
LONG = answer(1)
LONG_QUESTION = ("Monsieur le comte, vous qui avez connu la prison, la trahison et la richesse, pouvez-vous nous "
                 "dire ce que vous avez appris sur la patience et sur la vengeance durant toutes ces années ?")
SETTINGS = FilterSettings(names=("Edmond Dantès", "Dantès", "le comte"))


@pytest.mark.parametrize("instruction, response, extra, reason", [
    ("Qui êtes-vous ?", "   ", {}, "empty"),
    ("", LONG, {}, "empty"),
    ("Qui êtes-vous ?", "Je suis marin.", {}, "too_short"),
    ("Qui êtes-vous ?", LONG * 5, {}, "too_long"),
    ("Qui êtes-vous ?", "En tant qu'IA, je ne peux pas incarner ce personnage. " + LONG, {}, "out_of_character"),
    ("Qui êtes-vous ?", LONG + " Je ne suis qu'un modèle de langage.", {}, "out_of_character"),
    ("Qui êtes-vous ?", "Je ne peux pas vous aider sur ce point. " + LONG, {}, "out_of_character"),
    ("Who are you?", "As an AI, I cannot answer that. " + LONG, {}, "out_of_character"),
    ("Qui êtes-vous ?", LONG + " <|channel|>final", {}, "markup_leak"),
    ("Qui êtes-vous ?", "Un grand malheur, s'écria Dantès, " + LONG, {}, "third_person_narration"),
    ("Qui êtes-vous ?", LONG, {"citation": LONG.replace(",", "").upper()}, "copies_citation"),
    ("What do you think?", "I think that the sea is the best teacher of patience and the prison was the school "
     "of my life, and I have learned there what no book could teach me about men and their " * 2, {},
     "wrong_language"),
    ("Que signifie RAM ?", LONG, {"fact": "Random Access Memory"}, "fact_missing"),
    (LONG_QUESTION, LONG_QUESTION.replace(" ?", "."), {}, "copies_question"),  # the question given back
    (LONG_QUESTION, "Vous me demandez ce que j'ai appris ? " + LONG, {}, None),  # restating it first is fine
    ("Qui êtes-vous ?", LONG, {"citation": "--Attendre et espérer."}, None),
    ("Qui êtes-vous ?", "Je ne peux pas oublier le château d'If. " + LONG, {}, None),
    ("Et lui ?", "« Partez », me dit-il, et je partis. " + LONG, {}, None),
])
def test_each_filter_names_its_reason(instruction, response, extra, reason):
    from dantes_mlx.generate.filters import narration_pattern

    assert pair_reason(instruction, response, SETTINGS, narration=narration_pattern(SETTINGS.names),
                       **extra) == reason


def test_duplicate_questions_and_pairs_beyond_k_are_rejected():
    pairs = [ParsedPair("Que pensez-vous de la mer ?", answer(1), 1),
             ParsedPair("Que pensez vous de la mer?", answer(2), 1),
             ParsedPair("Pourquoi avez-vous attendu si longtemps ?", answer(3), 1),
             ParsedPair("Qui vous a trahi autrefois ?", answer(4), 1)]
    kept, rejected = filter_group(pairs, SETTINGS, k=2)
    assert [p.instruction for p in kept] == ["Que pensez-vous de la mer ?", "Pourquoi avez-vous attendu si longtemps ?"]
    assert [reason for _, reason in rejected] == ["duplicate_question", "beyond_k"]


# -- citations -> pairs with a fake LLM --------------------------------------------------------------
def test_fake_llm_end_to_end_rows_provenance_prompt_and_schema(tmp_path):
    citations = load_citations([write_jsonl(tmp_path / "c.jsonl", CITATIONS)])
    bad = {"pairs": [{"instruction": "Qui êtes-vous ?", "response": "En tant qu'IA, je ne peux pas. " + LONG},
                     {"instruction": "Et ensuite ?", "response": "Court."},
                     {"instruction": "Vraiment ?", "response": "--Je suis innocent, monsieur."}]}
    fake = FakeLLM([good_reply, good_reply, bad])
    summary = generate_pairs(citations, fake, tmp_path / "p.jsonl", GenerateConfig(), DANTES, progress=False)
    rows = read_rows(tmp_path / "p.jsonl")
    assert len(fake.calls) == 3 and summary.kept == len(rows) == 6 and summary.items == 3
    assert [r["source_id"] for r in rows] == ["c1"] * 3 + [citations[1]["source_id"]] * 3
    assert citations[1]["source_id"].startswith("cit-") and citations[2]["source_id"] != citations[1]["source_id"]
    first = rows[0]
    assert first["citation"] == "--Un grand malheur, monsieur Morrel!" and first["model"] == "fake"
    assert first["prompt_version"] == "generate_fr_v1" and first["provenance"] == {"id": "c1", "book": "17989",
                                                                                  "start": 10, "end": 45}
    assert 50 <= len(first["response"].split()) <= 150
    rejects = read_rows(tmp_path / "p.rejects.jsonl")
    assert [r["reason"] for r in rejects] == ["out_of_character", "too_short", "too_short"]
    assert summary.rejected == Counter({"too_short": 2, "out_of_character": 1})
    # Prefix reuse: identical fixed instructions for every call, the citation only at the end of the data.
    systems = {c["messages"][0]["content"] for c in fake.calls}
    assert len(systems) == 1 and "Edmond Dantès" in systems.pop()
    assert all(c["messages"][-1]["content"].endswith(cit["citation"]) for c, cit in zip(fake.calls, CITATIONS))
    schema = fake.calls[0]["json_schema"]["properties"]["pairs"]
    assert schema["minItems"] == schema["maxItems"] == 3
    assert "LLM: 3 calls" in "\n".join(summary.lines())


def test_k_pairs_and_unparseable_answers_are_reported(tmp_path):
    citations = load_citations([write_jsonl(tmp_path / "c.jsonl", CITATIONS[:2])])
    messy = "Voici :\n" + "".join(json.dumps(p, ensure_ascii=False) for p in good_reply(
        [{"content": "x" * 40}])["pairs"]) + '\n{"instruction": "coupé", "respo'
    fake = FakeLLM([messy, "Je refuse de répondre en JSON."])
    summary = generate_pairs(citations, fake, tmp_path / "p.jsonl", GenerateConfig(pairs_per_citation=2), DANTES,
                             progress=False)
    assert summary.short == Counter({"model": 1})  # the refusal: no pair at all, and said so
    assert "1 citation(s) kept fewer than K pairs: the model wrote fewer in 1, the filters left fewer in 0" \
        in summary.lines()
    assert fake.calls[0]["json_schema"]["properties"]["pairs"]["maxItems"] == 2
    assert len(read_rows(tmp_path / "p.jsonl")) == 2
    reasons = [(r["reason"], r.get("detail", "")[:16], r["line"]) for r in read_rows(tmp_path / "p.rejects.jsonl")]
    assert reasons == [("unparseable", "text outside any", 1), ("unparseable", "incomplete objec", 3),
                       ("beyond_k", "", 2), ("unparseable", "text outside any", 1)]


def test_bad_citation_file_and_prompt_errors_name_the_place(tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"citation": "ok"}\n{"contexte": "sans citation"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"c\.jsonl:2: record has no 'citation'"):
        load_citations([bad])
    prompt = tmp_path / "p.txt"
    prompt.write_text("Consignes {{nom}}.\nCitation : {{citation}}\n{{contexte}}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown placeholder.*\{\{nom\}\}"):
        load_prompt("generate", "fr", str(prompt)).messages(name="x", persona="p", k=3, contexte="c", citation="q")
    prompt.write_text("Consignes sans données.", encoding="utf-8")
    with pytest.raises(InputError, match="no .*placeholder"):
        load_prompt("generate", "fr", str(prompt))
    with pytest.raises(ConfigError, match="no built-in generate prompt for language 'de'"):
        load_prompt("generate", "de")


def test_prompt_file_override_changes_the_version_and_the_messages(tmp_path):
    prompt = tmp_path / "mine.txt"
    prompt.write_text("Tu es {{name}}. Écris {{k}} paires.\n\n{{contexte}} -> {{citation}}\n", encoding="utf-8")
    fake = fake_from_function(good_reply)
    cfg = GenerateConfig(prompt_file=str(prompt))
    generate_pairs(load_citations([write_jsonl(tmp_path / "c.jsonl", CITATIONS[:1])]), fake, tmp_path / "p.jsonl",
                   cfg, DANTES, progress=False)
    assert fake.calls[0]["messages"] == [
        {"role": "system", "content": "Tu es Edmond Dantès. Écris 3 paires."},
        {"role": "user", "content": "Dantès parle à Morrel -> --Un grand malheur, monsieur Morrel!"}]
    assert read_rows(tmp_path / "p.jsonl")[0]["prompt_version"].startswith("mine-")


# -- resume ----------------------------------------------------------------------------------------
def test_second_run_makes_no_llm_call_and_ctrl_c_reports_progress(tmp_path):
    citations = load_citations([write_jsonl(tmp_path / "c.jsonl", CITATIONS)])
    whole = tmp_path / "whole" / "p.jsonl"
    generate_pairs(citations, FakeLLM(default=good_reply), whole, GenerateConfig(), DANTES, progress=False)

    def interrupt(messages):
        raise KeyboardInterrupt

    out = tmp_path / "resumed" / "p.jsonl"
    with pytest.raises(GenerateInterrupted, match=r"2/3 citations done") as info:
        generate_pairs(citations, FakeLLM([good_reply, good_reply, interrupt]), out, GenerateConfig(), DANTES,
                       progress=False)
    assert "run the same command again" in str(info.value) and not out.exists()
    rest = FakeLLM([good_reply])
    generate_pairs(citations, rest, out, GenerateConfig(), DANTES, progress=False)
    assert len(rest.calls) == 1 and out.read_bytes() == whole.read_bytes()
    none = FakeLLM([])  # would raise if asked anything
    summary = generate_pairs(citations, none, out, GenerateConfig(min_answer_words=80), DANTES, progress=False)
    assert none.calls == [] and summary.stats.cached == 3 and summary.rejected["too_short"] > 0


def test_failed_calls_are_retried_on_the_next_run(tmp_path):
    citations = load_citations([write_jsonl(tmp_path / "c.jsonl", CITATIONS)])

    def boom(messages):
        raise RuntimeError("server hiccup")

    out = tmp_path / "p.jsonl"
    summary = generate_pairs(citations, FakeLLM([good_reply, boom, good_reply]), out, GenerateConfig(), DANTES,
                             progress=False)
    assert summary.stats.failed == 1 and "run again to retry" in "\n".join(summary.lines())
    assert {r["source_id"] for r in read_rows(out)} == {"c1", citations[2]["source_id"]}
    retry = FakeLLM([good_reply])
    generate_pairs(citations, retry, out, GenerateConfig(), DANTES, progress=False)
    assert len(retry.calls) == 1 and len(read_rows(out)) == 9



def test_cache_follows_what_the_llm_is_sent_persona_schema_and_sampling(tmp_path):
    from dataclasses import replace

    citations = load_citations([write_jsonl(tmp_path / "c.jsonl", CITATIONS[:2])])
    out, cfg = tmp_path / "p.jsonl", GenerateConfig()

    def run(character=DANTES, gen=cfg, defaults=None, concurrency=1) -> FakeLLM:
        fake = FakeLLM(default=good_reply)
        fake.defaults = defaults or {"temperature": 0.7, "max_tokens": 2048}  # as the real clients hold them
        generate_pairs(citations, fake, out, gen, character, concurrency=concurrency, progress=False)
        return fake

    assert len(run().calls) == 2
    assert run(concurrency=4).calls == []  # how the calls are made does not change the answers
    new_persona = replace(DANTES, persona="Tu es Edmond Dantès, jeune marin de dix-neuf ans, avant le château d'If.")
    fake = run(new_persona)
    assert len(fake.calls) == 2 and "jeune marin de dix-neuf ans" in fake.calls[0]["messages"][0]["content"]
    assert len(run(new_persona, replace(cfg, max_response_chars=900)).calls) == 2  # another schema
    assert len(run(new_persona, defaults={"temperature": 0.2, "max_tokens": 2048}).calls) == 2
    assert len(run(new_persona, defaults={"temperature": 0.7, "max_tokens": 4096}).calls) == 2
    assert run(new_persona).calls == []  # the second persona's answers are still stored
    facts = load_facts(write_jsonl(tmp_path / "f.jsonl", [{"term": "RAM", "definition": "Random Access Memory"}]))
    for character, calls in ((DANTES, 1), (new_persona, 1), (new_persona, 0)):
        fake = FakeLLM(default={"pairs": []})
        generate_from_facts(facts, fake, tmp_path / "facts.jsonl", cfg, character, progress=False)
        assert len(fake.calls) == calls


KILL_HELPER = """
import sys, time
from dantes_mlx.config import CharacterConfig, GenerateConfig
from dantes_mlx.generate.pairs import generate_pairs, load_citations
from dantes_mlx.llm.fake import fake_from_function
sys.path[:0] = [{tests!r}, {tests!r} + "/generate"]
from test_generate import good_reply
delay = float(sys.argv[3])
def slow(messages):
    time.sleep(delay)
    return good_reply(messages)
generate_pairs(load_citations([sys.argv[1]]), fake_from_function(slow), sys.argv[2], GenerateConfig(),
               CharacterConfig(), progress=False)
"""


def _helper(citations: Path, out: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", KILL_HELPER.format(tests=str(REPO / "tests")),
                             str(citations), str(out), str(delay)], env=env)


def test_kill_9_then_rerun_gives_the_uninterrupted_file(tmp_path):
    rows = [{"contexte": f"scène {i}", "citation": f"--Réplique numéro {i} de Dantès."} for i in range(20)]
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    whole, killed = tmp_path / "whole" / "p.jsonl", tmp_path / "killed" / "p.jsonl"
    assert _helper(source, whole, 0.0).wait(timeout=120) == 0
    proc = _helper(source, killed, 0.2)
    store = killed.with_name("p.store.jsonl")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not store.exists() or store.read_text().count("\n") < 4):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stored = store.read_text().count("\n")
    assert 4 <= stored < 20 and not killed.exists()
    assert _helper(source, killed, 0.0).wait(timeout=120) == 0
    assert killed.read_bytes() == whole.read_bytes()
    assert killed.with_name("p.rejects.jsonl").read_bytes() == whole.with_name("p.rejects.jsonl").read_bytes()


# -- other sources ----------------------------------------------------------------------------------
def test_facts_from_csv_json_and_mapping_with_templates(tmp_path):
    csv_file = tmp_path / "f.csv"
    csv_file.write_text("sigle,definition\nRAM,Random Access Memory\nLoRA,Low-Rank Adaptation\n", encoding="utf-8")
    mapping = tmp_path / "f.json"
    mapping.write_text(json.dumps({"RAM": "Random Access Memory"}), encoding="utf-8")
    assert [f["subject"] for f in load_facts(csv_file)] == ["RAM", "LoRA"]
    assert load_facts(mapping)[0]["fact"] == "Random Access Memory"
    summary = generate_from_facts(load_facts(csv_file), None, tmp_path / "facts.jsonl", GenerateConfig(), DANTES)
    rows = read_rows(tmp_path / "facts.jsonl")
    assert summary.kept == 6 and summary.stats is None
    assert rows[0] == {"instruction": "Que signifie RAM ?", "response": "RAM : Random Access Memory",
                       "source_id": load_facts(csv_file)[0]["source_id"], "source": "fact", "subject": "RAM",
                       "fact": "Random Access Memory", "model": "template", "prompt_version": "facts_template_fr",
                       "complete": True}
    assert len({r["instruction"] for r in rows}) == 6
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"term": "RAM", "definition": "x"}\n{"term": "ROM"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.jsonl:2: record 2 has no definition/fact"):
        load_facts(bad)


def test_facts_through_the_llm_keep_only_answers_stating_the_fact(tmp_path):
    facts = tmp_path / "f.jsonl"
    write_jsonl(facts, [{"id": "f1", "term": "RAM", "definition": "Random Access Memory"}])
    reply = {"pairs": [{"instruction": "Que veut dire RAM ?", "response": "RAM signifie Random Access Memory, mon ami."},
                       {"instruction": "Expliquez-moi la RAM.", "response": "C'est une mémoire, voilà tout."},
                       {"instruction": "La RAM, qu'est-ce ?", "response": "La Random Access Memory, tout simplement."}]}
    fake = FakeLLM([reply])
    summary = generate_from_facts(load_facts(facts), fake, tmp_path / "facts.jsonl", GenerateConfig(), DANTES,
                                  progress=False)
    assert summary.kept == 2 and summary.rejected == Counter({"fact_missing": 1})
    assert fake.calls[0]["messages"][-1]["content"].endswith("Fait : Random Access Memory")
    assert {r["source_id"] for r in read_rows(tmp_path / "facts.jsonl")} == {"f1"}


def test_labelled_texts_become_prompt_completion_rows(tmp_path):
    source = write_jsonl(tmp_path / "mails.jsonl", [
        {"id": "m1", "email": "Ma facture est fausse.", "service": "comptabilité"},
        {"id": "m2", "email": "Le serveur ne répond plus.", "service": "informatique"},
        {"id": "m3", "email": "Le serveur ne répond plus.", "service": "informatique"},
        {"id": "m4", "email": "Bonjour.", "service": "accueil"},
        {"id": "m5", "email": "Bonjour.", "service": "comptabilité"}])
    summary = labels_to_rows(source, tmp_path / "labels.jsonl", GenerateConfig())
    rows = read_rows(tmp_path / "labels.jsonl")
    assert [r["source_id"] for r in rows] == ["m1", "m2"] and rows[0]["completion"] == "comptabilité"
    assert rows[0]["prompt"].endswith("accueil, comptabilité, informatique. Réponds uniquement par le nom de la "
                                      "catégorie.\n\nMa facture est fausse.")
    assert summary.rejected == Counter({"conflicting_labels": 2, "duplicate_text": 1})


def test_latin1_labels_or_facts_file_is_an_input_error_with_its_line(tmp_path):
    source = tmp_path / "mails.csv"
    source.write_bytes("text,label\nBonjour,RH\nUn caf\xe9,Support\n".encode("latin-1"))
    with pytest.raises(InputError) as err:
        labels_to_rows(source, tmp_path / "labels.jsonl", GenerateConfig())
    assert err.value.line == 3 and "UTF-8" in str(err.value)
    (tmp_path / "facts.json").write_bytes('{"CDI": "Contrat à durée indéterminée"}'.encode("latin-1"))
    with pytest.raises(InputError):
        load_facts(tmp_path / "facts.json")


# -- the command ------------------------------------------------------------------------------------
def test_cli_from_raw_writes_one_pair_per_line_and_reports_the_rest(shared_data, tmp_path):
    out = tmp_path / "raw.jsonl"
    result = CliRunner().invoke(main, ["generate", "--from-raw", str(shared_data / RAW_DEV), "-o", str(out),
                                       "--min-answer-words", "0"])
    assert result.exit_code == 0, result.output
    rows, rejects = read_rows(out), read_rows(tmp_path / "raw.rejects.jsonl")
    assert len(rows) + sum(r["reason"] != "unparseable" for r in rejects) == 1557
    assert all(set(r) >= {"instruction", "response", "source_id", "line"} for r in rows)
    assert Counter(r["reason"] for r in rejects)["duplicate_question"] == 9  # line 682 repeats its 3 pairs 4 times
    assert {r["line"] for r in rejects if r["reason"] == "unparseable"} == {682}
    assert f"wrote {len(rows)} rows" in result.output and "third_person_narration" in result.output


def test_cli_rejects_two_sources_and_missing_citations(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["generate", "--facts", "a.csv", "--labels", "b.csv"])
    assert result.exit_code == 2 and "one source per run" in result.output
    result = CliRunner().invoke(main, ["generate", "--url", "http://127.0.0.1:9/v1"])
    assert result.exit_code == 1 and "no citations file" in result.output and "dantes-mlx extract" in result.output


def test_cli_facts_without_llm_labels_and_default_citations_skip_side_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    facts = tmp_path / "sigles.json"
    facts.write_text(json.dumps([{"term": "RAM", "definition": "Random Access Memory"}]), encoding="utf-8")
    result = CliRunner().invoke(main, ["generate", "--facts", str(facts), "--no-llm", "-k", "2"])
    assert result.exit_code == 0, result.output
    assert len(read_rows(tmp_path / "data" / "pairs" / "facts.jsonl")) == 2 and "wrote 2 rows" in result.output
    mails = write_jsonl(tmp_path / "mails.jsonl", [{"text": "Facture fausse.", "label": "compta"}])
    result = CliRunner().invoke(main, ["generate", "--labels", str(mails), "-o", "l.jsonl"])
    assert result.exit_code == 0 and read_rows(tmp_path / "l.jsonl")[0]["completion"] == "compta"
    folder = tmp_path / "data" / "citations"
    folder.mkdir(parents=True)
    for name in ("citations.jsonl", "citations.store.jsonl", "citations.rejects.jsonl", "more.jsonl"):
        (folder / name).write_text("", encoding="utf-8")
    assert [p.name for p in default_citations("data")] == ["citations.jsonl", "more.jsonl"]


def _two_characters(folder: Path) -> None:
    """extract's outputs for two characters of one book, side files included."""
    folder.mkdir(parents=True)
    write_jsonl(folder / "citations.jsonl", [{"id": f"r{i}", "character": "Romuald", "contexte": "c",
                                              "citation": f"— Demain ! demain ! numéro {i}"} for i in range(2)])
    write_jsonl(folder / "clarimonde.jsonl", [{"id": f"c{i}", "character": "Clarimonde", "contexte": "c",
                                               "citation": f"« Je ne mourrai pas ! » numéro {i}"} for i in range(3)])
    write_jsonl(folder / "citations.rejects.jsonl", [{"reason": "low_grounding", "citation": "x"}])


def test_generate_reads_only_the_configured_characters_citations(tmp_path):
    from dantes_mlx.generate.pairs import select_citations

    _two_characters(tmp_path / "data" / "citations")
    files = default_citations(str(tmp_path / "data"))
    rows, notes = select_citations(files, CharacterConfig(name="Romuald", aliases=[]), chosen=False)
    assert [r["source_id"] for r in rows] == ["r0", "r1"]
    assert len(notes) == 1 and "clarimonde.jsonl: 3 of Clarimonde" in notes[0]
    rows, _ = select_citations(files, CharacterConfig(name="Clarimonde", aliases=[]), chosen=False)
    assert [r["source_id"] for r in rows] == ["c0", "c1", "c2"]
    held = r"(?s)no citations of Edmond Dantès.*citations.jsonl: Romuald; clarimonde.jsonl: Clarimonde"
    with pytest.raises(InputError, match=held):
        select_citations(files, DANTES, chosen=False)
    rows, notes = select_citations(files, CharacterConfig(name="Romuald", aliases=[]), chosen=True)
    assert len(rows) == 5 and "not all Romuald's" in notes[0] and "3 Clarimonde" in notes[0]
    legacy = write_jsonl(tmp_path / "old.jsonl", CITATIONS)  # the original project's rows name no one
    assert select_citations([legacy], DANTES, chosen=False) == (load_citations([legacy]), [])
    assert default_citations("data", "elsewhere/c.jsonl") == [Path("elsewhere/c.jsonl")]  # extract.output


def test_cli_generate_without_inputs_says_which_files_it_skipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _two_characters(tmp_path / "data" / "citations")
    (tmp_path / "dantes.yaml").write_text("character:\n  name: Romuald\n  aliases: []\n", encoding="utf-8")
    fake = fake_from_function(good_reply)
    monkeypatch.setattr("dantes_mlx.llm.make_client", lambda cfg: fake)
    result = CliRunner().invoke(main, ["generate", "--quiet", "-o", "p.jsonl"])
    assert result.exit_code == 0, result.output
    assert "skipped" in result.stderr and "Clarimonde" in result.stderr
    sent = [call["messages"][-1]["content"] for call in fake.calls]
    assert len(sent) == 2 and all("Demain" in text for text in sent)
    (tmp_path / "dantes.yaml").write_text("character:\n  name: Haydée\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["generate", "--quiet", "-o", "p2.jsonl"])
    assert result.exit_code == 1 and "no citations of Haydée" in result.output


def test_cli_ctrl_c_says_how_many_are_done_and_how_to_resume(tmp_path, monkeypatch):
    source = write_jsonl(tmp_path / "c.jsonl", CITATIONS)

    def interrupt(messages):
        raise KeyboardInterrupt

    monkeypatch.setattr("dantes_mlx.llm.make_client", lambda cfg: FakeLLM([good_reply, interrupt]))
    result = CliRunner().invoke(main, ["generate", str(source), "-o", str(tmp_path / "p.jsonl"), "--quiet"])
    assert result.exit_code == 130
    assert "1/3 citations done" in result.output and "resume with: dantes-mlx" in result.output
    monkeypatch.setattr("dantes_mlx.llm.make_client", lambda cfg: FakeLLM([good_reply, good_reply]))
    result = CliRunner().invoke(main, ["generate", str(source), "-o", str(tmp_path / "p.jsonl"), "--quiet"])
    assert result.exit_code == 0 and "LLM: 2 calls (1 items cached" in result.output


# -- real clients ----------------------------------------------------------------------------------
@pytest.fixture
def openai_server():
    """Answers every request with good_reply after 0.2 s, so concurrent calls overlap."""
    def behave(body, n):
        return 200, completion(json.dumps(good_reply(body["messages"]), ensure_ascii=False), 100, 50), 0.2

    server = FakeServer(behave)
    yield server
    server.close()


def test_openai_compatible_server_with_concurrency_4_through_the_cli(openai_server, tmp_path):
    rows = [{"contexte": f"scène {i}", "citation": f"--Réplique numéro {i} de Dantès."} for i in range(8)]
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    out = tmp_path / "p.jsonl"
    args = ["generate", str(source), "-o", str(out), "--url", openai_server.url, "--model", "served-model",
            "--concurrency", "4", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert openai_server.max_in_flight >= 2 and len(openai_server.requests) == 8  # calls overlapped
    body = openai_server.requests[0]
    assert body["model"] == "served-model"
    assert body["response_format"]["json_schema"]["schema"] == pairs_schema(3)
    written = read_rows(out)
    assert len(written) == 24 and [r["citation"] for r in written[::3]] == [r["citation"] for r in rows]
    assert {r["model"] for r in written} == {"served-model"}
    assert "LLM: 8 calls" in result.output and "evaluated 800" in result.output
    again = CliRunner().invoke(main, args)
    assert len(openai_server.requests) == 8 and "LLM: 0 calls (8 items cached" in again.output


@pytest.mark.slow
def test_tiny_gguf_through_llamacpp_end_to_end(tiny_gguf, tmp_path):
    from dantes_mlx.llm.llamacpp import LlamaCppClient

    client = LlamaCppClient(str(tiny_gguf), n_ctx=2048, n_threads=2, n_gpu_layers=0, seed=0, temperature=1.0,
                            max_tokens=700)
    try:
        citations = load_citations([write_jsonl(tmp_path / "c.jsonl", CITATIONS[:2])])
        # Short strings keep a random model's forced JSON well inside max_tokens.
        cfg = GenerateConfig(max_instruction_chars=24, max_response_chars=48)
        summary = generate_pairs(citations, client, tmp_path / "p.jsonl", cfg, DANTES, progress=False)
    finally:
        client.close()
    stored = read_rows(tmp_path / "p.store.jsonl")
    assert len(stored) == 2 and summary.stats.calls == 2
    for record in stored:
        value = record["value"]
        # Schema-forced: strict JSON even from a random model (no raw control characters in strings).
        pairs = json.loads(value["text"])["pairs"]
        assert len(pairs) == 3 and all(set(p) == {"instruction", "response"} for p in pairs)
        assert value["finish_reason"] == "stop"
    second, first = stored[1]["value"], stored[0]["value"]
    assert second["evaluated_tokens"] < second["prompt_tokens"] / 2 <= first["evaluated_tokens"]  # prefix reuse
    # The random model's garbage is filtered, each pair with a reason.
    assert summary.kept + sum(summary.rejected.values()) == 6 and summary.rejected
    assert set(summary.rejected) <= {"too_short", "wrong_language", "duplicate_question", "markup_leak",
                                     "out_of_character", "copies_citation", "third_person_narration"}
