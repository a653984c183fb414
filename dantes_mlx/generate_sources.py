"""Training rows from other sources: facts (term -> definition) to conversations, labelled texts to completions."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

from dantes_mlx.config import CharacterConfig, GenerateConfig
from dantes_mlx.dataset_formats import decode_text, read_records
from dantes_mlx.errors import InputError
from dantes_mlx.generate import (check_paths, filter_settings, filtered_rows, finish, load_prompt, make_task,
                                 output_paths, pairs_schema, run_tasks, salvage, text_id)
from dantes_mlx.llm.base import call_sampling
from dantes_mlx.outputs import output_lock
from dantes_mlx.pairs_parser import ParsedPair
from dantes_mlx.store import Store

SUBJECT_KEYS = ("term", "acronym", "sigle", "subject", "name", "key", "question")
FACT_KEYS = ("definition", "meaning", "fact", "description", "value", "answer")
TEXT_KEYS = ("text", "email", "message", "content", "body", "input")
LABEL_KEYS = ("label", "service", "category", "class", "intent", "output")
# Questions asked about a fact when no LLM is used: k of them per fact, in this order.
FACT_TEMPLATES = {
    "fr": ["Que signifie {subject} ?", "Qu'est-ce que {subject} ?", "Pouvez-vous m'expliquer ce qu'est {subject} ?",
           "{subject}, qu'est-ce que cela veut dire ?", "Donnez-moi la définition de {subject}.",
           "J'ai entendu parler de {subject} : de quoi s'agit-il ?"],
    "en": ["What does {subject} mean?", "What is {subject}?", "Can you explain what {subject} is?",
           "{subject}: what does it stand for?", "Give me the definition of {subject}.",
           "I heard about {subject}: what is it?"],
}
FACT_ANSWER = {"fr": "{subject} : {fact}", "en": "{subject}: {fact}"}
LABEL_INSTRUCTION = ("Classe le texte suivant dans l'une de ces catégories : {labels}. "
                     "Réponds uniquement par le nom de la catégorie.")


def load_records(path: str | Path) -> list[tuple[int, dict]]:
    """(line or record number, record) from a .jsonl, .json (list, or {key: value} mapping) or .csv file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path=path, fix="check the path")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".csv"):
        return read_records(path)  # BOM, separators, bad bytes: the same reader as prepare
    if suffix == ".json":
        try:
            data = json.loads(decode_text(path))
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON ({exc.msg})", path=path, line=exc.lineno, fix="repair the file") from None
        if isinstance(data, dict):
            return [(i, {"term": k, "definition": v}) for i, (k, v) in enumerate(data.items(), 1)]
        if isinstance(data, list):
            return list(enumerate(data, 1))
        raise InputError("expected a JSON list of records or a {term: definition} mapping", path=path,
                         fix="wrap the records in [ ... ]")
    raise InputError(f"unsupported file type '{suffix}'", path=path, fix="use .jsonl, .json or .csv")


def _field(record, keys: tuple[str, ...], position: int, path, number: int, what: str) -> str:
    """A record's field by name (case-insensitive), else by position in a two-column record; "" when that
    field is empty. No such field raises InputError."""
    if isinstance(record, dict):
        lowered = {str(k).strip().lower(): v for k, v in record.items()}
        present = [key for key in keys if key in lowered]
        for key in present:
            if lowered[key] not in (None, ""):
                return str(lowered[key]).strip()
        if present:
            return ""
        if len(record) == 2:
            value = list(record.values())[position]
            return "" if value is None else str(value).strip()
    raise InputError(f"record {number} has no {what} field", path=path, line=number,
                     fix=f"name the field one of: {', '.join(keys)}")


def _filled(value: str, path, number: int, what: str) -> str:
    if not value:
        raise InputError(f"record {number} has an empty {what}", path=path, line=number,
                         fix="fill it in or delete that record")
    return value


def _record_id(record, prefix: str, text: str) -> str:
    value = record.get("id") if isinstance(record, dict) else None
    return str(value) if value not in (None, "") else text_id(prefix, text)


# -- facts -> conversations -------------------------------------------------------------------------
def load_facts(path: str | Path) -> list[dict]:
    """Facts as {source_id, subject, fact}."""
    facts = []
    for number, record in load_records(path):
        subject = _filled(_field(record, SUBJECT_KEYS, 0, path, number, "term/subject"), path, number, "term")
        fact = _filled(_field(record, FACT_KEYS, 1, path, number, "definition/fact"), path, number, "definition")
        facts.append({"source_id": _record_id(record, "fact", subject), "subject": subject, "fact": fact})
    if not facts:
        raise InputError("no facts found", path=path, fix="add records such as {\"term\": ..., \"definition\": ...}")
    return facts


def template_pairs(fact: dict, k: int, language: str) -> list[ParsedPair]:
    """k template questions about a fact, each answered with the fact itself (no LLM)."""
    templates = FACT_TEMPLATES.get(language, FACT_TEMPLATES["en"])
    answer = FACT_ANSWER.get(language, FACT_ANSWER["en"]).format(**fact)
    return [ParsedPair(t.format(subject=fact["subject"]), answer, i + 1) for i, t in enumerate(templates[:k])]


def generate_from_facts(facts: list[dict], client, out: str | Path, cfg: GenerateConfig,
                        character: CharacterConfig, *, concurrency: int = 1, sampling: dict | None = None,
                        progress: bool = True, inputs=(), max_failures: int = 5):
    """k questions per fact, answered with the fact; by the LLM (in the character's voice) or templates.
    `inputs`: the files the facts came from (never written)."""
    out = check_paths(out, inputs, cfg.prompt_file)
    with output_lock(out):
        return _from_facts(facts, client, out, cfg, character, concurrency, sampling, progress, max_failures)


def _from_facts(facts, client, out: Path, cfg: GenerateConfig, character: CharacterConfig, concurrency, sampling,
                progress, max_failures):
    started, k = time.monotonic(), cfg.pairs_per_citation
    # Fact answers may be one short sentence: only the fact's presence is required of them.
    settings = filter_settings(cfg, character, min_answer_words=1, max_citation_similarity=101.0)
    stats, results, model, version = None, {}, "template", f"facts_template_{character.language}"
    if client is not None:
        prompt = load_prompt("facts", character.language, cfg.prompt_file, data_fields=("subject", "fact"))
        model, version = client.model_id, prompt.version
        store = Store(output_paths(out)[2])
        tasks = []
        for fact in facts:
            messages = prompt.messages(name=character.name, persona=character.persona, k=k,
                                       subject=fact["subject"], fact=fact["fact"])
            tasks.append(make_task("generate-facts", version, model, messages,
                                   pairs_schema(k, cfg.max_instruction_chars, cfg.max_response_chars),
                                   call_sampling(client, sampling)))
        stats = run_tasks(tasks, client, store, concurrency=concurrency, unit="fact", sampling=sampling,
                          progress=progress, max_failures=max_failures)
        results = {fact["source_id"]: (task.key, store) for fact, task in zip(facts, tasks)}
    rows, rejects, done = [], [], 0
    for fact in facts:
        unparsed = []
        if client is None:
            pairs = template_pairs(fact, k, character.language)
        else:
            key, store = results[fact["source_id"]]
            if key not in store:
                continue
            pairs, unparsed = salvage(store.get(key), fact["source_id"])
        base = {"source_id": fact["source_id"], "source": "fact", "subject": fact["subject"],
                "fact": fact["fact"], "model": model, "prompt_version": version}
        kept, filtered = filtered_rows(pairs, settings, base, k=k, fact=fact["fact"])
        rows, rejects, done = rows + kept, rejects + unparsed + filtered, done + 1
    return finish(Path(out), rows, rejects, done, started, stats)


# -- labelled texts -> prompt/completion ------------------------------------------------------------
def labels_to_rows(path: str | Path, out: str | Path, cfg: GenerateConfig):
    """Prompt/completion rows: an instruction naming the labels + the text -> its label (no LLM)."""
    started, records, rejects = time.monotonic(), [], []
    out = check_paths(out, [path])
    loaded = load_records(path)
    for number, record in loaded:
        text = _field(record, TEXT_KEYS, 0, path, number, "text")
        label = _field(record, LABEL_KEYS, 1, path, number, "label")
        if not text or not label:  # an unlabelled row of a spreadsheet: set aside, the others still count
            rejects.append({"source_id": _record_id(record, "text", text), "line": number, "text": text[:200],
                            "label": label, "reason": "empty_text" if not text else "empty_label"})
            continue
        records.append((_record_id(record, "text", text), text, label, number))
    labels_of = defaultdict(set)
    for _, text, label, _ in records:
        labels_of[text].add(label)
    instruction = (cfg.label_instruction or LABEL_INSTRUCTION).replace(
        "{labels}", ", ".join(sorted({r[2] for r in records})))
    rows, seen = [], set()
    for source_id, text, label, number in records:
        reason = ("conflicting_labels" if len(labels_of[text]) > 1
                  else "duplicate_text" if text in seen else None)
        seen.add(text)
        if reason:
            rejects.append({"source_id": source_id, "reason": reason, "line": number, "text": text[:200],
                            "label": label})
            continue
        rows.append({"prompt": f"{instruction}\n\n{text}", "completion": label, "source_id": source_id,
                     "source": "label", "label": label})
    return finish(Path(out), rows, rejects, len(loaded), started)
