"""The prepare stage: any supported input -> deduped, group-aware split in mlx-lm's formats (+ HF DatasetDict)."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dantes_mlx.config import PrepareConfig
from dantes_mlx.dataset.formats import (Example, conversation_problems, message_text, read_examples,
                                        template_drops_system, to_output_row)
from dantes_mlx.dataset.mix import check_mix, interleave, read_mix, sample_mix
from dantes_mlx.dataset.split import (SPLIT_MODES, SPLITS, consecutive_runs, find_duplicates, group_ids, parse_split,
                                      split_groups, split_within_groups, strip_template)
from dantes_mlx.dataset.validate import PREPARE_REPORT, ValidationReport, validate_dir
from dantes_mlx.errors import ConfigError, DantesError, InputError, require
from dantes_mlx.outputs import check_output, output_lock, same_file
from dantes_mlx.store import write_jsonl_atomic, write_text_atomic

MAX_LABEL_WORDS = 3


@dataclass
class PrepareReport:
    """What prepare read, dropped, grouped and wrote."""
    out_dir: str
    inputs: list = field(default_factory=list)  # (path, input format, rows)
    cleaned: int = 0
    invalid: list = field(default_factory=list)  # (where, reason)
    duplicates: list = field(default_factory=list)  # (where, reason, kept where)
    groups: int = 0
    consecutive: dict = field(default_factory=dict)
    stratified: bool = False
    split_by: str = "group"
    counts: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    mixed: dict = field(default_factory=dict)  # --mix: file, ratio, persona train rows, rows mixed
    notes: list = field(default_factory=list)
    hf_dir: str | None = None
    hub_repo: str | None = None
    validation: ValidationReport | None = None

    def summary(self) -> str:
        lines = [f"read {path} ({kind}, {n} rows)" for path, kind, n in self.inputs]
        if self.cleaned:
            lines.append(f"removed control characters from {self.cleaned} row(s)")
        for where, reason in self.invalid:
            lines.append(f"dropped {where}: {reason}")
        reasons = Counter(reason.split(" (")[0] for _, reason, _ in self.duplicates)
        lines.append(f"dedupe: dropped {len(self.duplicates)} row(s)"
                     + (" (" + ", ".join(f"{n} {r}" for r, n in reasons.items()) + ")" if reasons else ""))
        if self.consecutive:
            c = self.consecutive
            lines.append(f"--group-consecutive: {c['runs']} runs of consecutive rows (sizes {c['sizes']}, "
                         f"similarity threshold {c['threshold']:.3f})")
        lines.append(f"groups: {self.groups}" + (", split stratified by label" if self.stratified else "")
                     + ("; split by row (memorisation): every group keeps a row in train, valid/test hold its "
                        "other rows" if self.split_by == "row" else ""))
        if self.mixed:
            m = self.mixed
            lines.append(f"--mix: mixed {m['rows']} general rows from {m['file']} into train only (ratio {m['ratio']} "
                         f"of {m['persona']} persona rows; train holds {m['persona'] + m['rows']})")
        lines.append("wrote " + ", ".join(f"{s} {n}" for s, n in self.counts.items()) + f" rows to {self.out_dir}")
        for split, c in self.labels.items():
            lines.append(f"  {split:5s} labels: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
        lines += [f"note: {n}" for n in self.notes]
        if self.hf_dir:
            lines.append(f"saved Hugging Face DatasetDict to {self.hf_dir}")
        if self.hub_repo:
            lines.append(f"pushed to https://huggingface.co/datasets/{self.hub_repo}")
        if self.validation is not None:
            lines.append("validation:\n  " + self.validation.summary().replace("\n", "\n  "))
        return "\n".join(lines)

    def failure(self) -> DantesError | None:
        """Validation errors in the folder just written: it is not ready to train on."""
        if self.validation is None or not self.validation.errors:
            return None
        return DantesError(f"{len(self.validation.errors)} validation error(s) in {self.out_dir}")

    def to_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k != "validation"}
        data["labels"] = {s: dict(c) for s, c in self.labels.items()}
        return data


def infer_labels(examples: list[Example]) -> bool:
    """Mark prompt -> short completion data as labelled (label = the completion); True when labelled."""
    if any(ex.label is not None for ex in examples):
        return True
    answers = []
    for ex in examples:
        turns = ex.turns()
        if len(turns) != 2 or len(message_text(turns[1]).split()) > MAX_LABEL_WORDS:
            return False
        answers.append(message_text(turns[1]))
    if not answers or len(set(answers)) > max(20, len(answers) // 4):
        return False
    for ex, answer in zip(examples, answers):
        ex.label = answer
    return True


def example_text(ex: Example, question_weight: int = 1) -> str:
    """All the words of a row (user turns repeated `question_weight` times), for dedupe and grouping."""
    if not ex.messages:
        return ex.text or ""
    parts = []
    for message in ex.messages:
        parts += [message_text(message)] * (question_weight if message["role"] == "user" else 1)
    return "\n".join(parts)


def _read_inputs(inputs: list[Path], report: PrepareReport) -> list[list[Example]]:
    per_file = []
    for path in inputs:
        examples, kind, dirty = read_examples(path)
        report.inputs.append((str(path), kind, len(examples)))
        report.cleaned += dirty
        valid = []
        for ex in examples:
            problems = conversation_problems(ex.messages) if ex.messages else ([] if ex.text else ["empty text"])
            if problems:
                report.invalid.append((ex.where, "; ".join(problems)))
            else:
                valid.append(ex)
        per_file.append(valid)
    return per_file


def _group_keys(per_file: list[list[Example]], cfg: PrepareConfig, report: PrepareReport) -> list[list]:
    """Per example: [source_id, group-key value, consecutive run]; also fills missing source ids."""
    keys = []
    sizes: Counter = Counter()
    thresholds = []
    for file_no, examples in enumerate(per_file):
        runs = [None] * len(examples)
        if cfg.group_consecutive and examples:
            runs, threshold = consecutive_runs([example_text(ex, 2) for ex in examples], cfg.consecutive_strictness)
            thresholds.append(threshold)
            sizes.update(Counter(Counter(runs).values()))
        stem = Path(examples[0].path).stem if examples else ""
        for ex, run in zip(examples, runs):
            value = None
            if cfg.group_key:
                if cfg.group_key not in ex.fields:
                    raise InputError(f"no field '{cfg.group_key}' to group by", path=ex.path, line=ex.line,
                                     fix=f"fields of this row: {', '.join(sorted(ex.fields))}")
                value = json.dumps(ex.fields[cfg.group_key], ensure_ascii=False, sort_keys=True)
            if ex.source_id is None:
                ex.source_id = (f"{cfg.group_key}={ex.fields[cfg.group_key]}" if value is not None
                                else f"{stem}#run{run}" if run is not None else f"{stem}:{ex.line}")
            cited = ex.fields.get("source_ids")  # a conversation: every citation it cites stays in its split
            sources = [ex.source_id, *map(str, cited)] if isinstance(cited, list) else ex.source_id
            keys.append([sources, value, None if run is None else f"{file_no}:{run}"])
    if cfg.group_consecutive:
        big = sum(n for size, n in sizes.items() if size > 3)
        report.consecutive = {"runs": sum(sizes.values()), "threshold": max(thresholds, default=0.0),
                              "sizes": ", ".join(f"{s}: {sizes[s]}" for s in sorted(sizes) if s <= 3)
                              + (f", 4+: {big}" if big else "")}
    return keys


def _hf_dict(splits: dict[str, list[dict]]):
    datasets = require("datasets", "a Hugging Face DatasetDict", "datasets")
    columns = list(dict.fromkeys(k for rows in splits.values() for row in rows for k in row))
    return datasets.DatasetDict({
        split: datasets.Dataset.from_list([{k: row.get(k) for k in columns} for row in rows])
        for split, rows in splits.items() if rows})


def save_hf(splits: dict[str, list[dict]], out: str | Path) -> Path:
    """Save the splits as a `datasets.DatasetDict` folder (written beside, then moved into place)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _hf_dict(splits).save_to_disk(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def push_hf(splits: dict[str, list[dict]], repo: str, private: bool = True) -> str:
    """Push the splits to the Hub; the token comes from HF_TOKEN or `hf auth login` and is never printed."""
    token = os.environ.get("HF_TOKEN") or None  # None: huggingface_hub falls back to the saved login
    try:
        _hf_dict(splits).push_to_hub(repo, private=private, token=token)
    except Exception as exc:
        message = str(exc).replace(token, "***") if token else str(exc)
        raise ConfigError(f"push to the Hugging Face Hub failed: {message}", path=repo,
                          fix="set HF_TOKEN or run `hf auth login`, and check the repo id") from exc
    return repo


def question_answer(ex: Example) -> tuple[str, str]:
    """(user turns, assistant turns) of a row, the system prompt left out; plain text rows: (text, "")."""
    if not ex.messages:
        return ex.text or "", ""
    return tuple("\n".join(message_text(m) for m in ex.messages if m["role"] == role)  # type: ignore[return-value]
                 for role in ("user", "assistant"))


def _dedupe(examples: list[Example], keys: list, cfg: PrepareConfig, report: PrepareReport):
    """Drop exact and near duplicates (the first occurrence stays) and record why."""
    drops = []
    if cfg.dedupe:
        questions, answers = zip(*map(question_answer, examples)) if examples else ((), ())
        by_file: dict[str, list[int]] = {}
        for i, ex in enumerate(examples):
            by_file.setdefault(ex.path, []).append(i)
        stripped = list(questions)
        for indices in by_file.values():  # each file's prompt template (an instruction before every e-mail)
            for i, text in zip(indices, strip_template([questions[i] for i in indices])):
                stripped[i] = text
        drops = find_duplicates(stripped, cfg.near_dup_threshold, list(answers))
    report.duplicates = [(examples[d.index].where, d.reason, examples[d.kept].where) for d in drops]
    dropped = {d.index for d in drops}
    return ([ex for i, ex in enumerate(examples) if i not in dropped],
            [k for i, k in enumerate(keys) if i not in dropped])


def _system_plan(examples: list[Example], cfg: PrepareConfig, persona: str | None, tokenizer,
                 report: PrepareReport) -> tuple[str | None, bool]:
    """(system prompt to add, whether to fold system prompts into the last question)."""
    system = persona if cfg.system_prompt and persona else None
    if system and examples and all(ex.fields.get("source") == "label" for ex in examples):
        report.notes.append("rows from `generate --labels` are a classification task: the character's persona "
                            "was not added as a system message")
        system = None
    if system and cfg.format == "completions":
        report.notes.append("mlx-lm's completions rows have no system field: the persona was not added "
                            "(use --format chat to train with it)")
        system = None
    inline = cfg.format != "completions" and template_drops_system(tokenizer)
    has_system = bool(system) or any(ex.messages and ex.messages[0]["role"] == "system" for ex in examples)
    if tokenizer is None and has_system and cfg.format == "chat":
        report.notes.append("no tokenizer: could not check that the chat template keeps system messages in "
                            "training rows (Mistral v0.3's drops them, and mlx-lm's prompt masking then hides "
                            "the whole answer); give --tokenizer so prepare can fold them into the question")
    if inline and has_system:
        report.notes.append("the tokenizer's chat template drops a system message from conversations that end "
                            "with the answer (Mistral v0.3 does): the system prompt was put in front of the "
                            "last question instead, as the template does at inference")
    return system, inline


def _write_splits(splits: dict[str, list[dict]], out_dir: Path, labelled: bool, report: PrepareReport) -> None:
    for split, rows in splits.items():
        path = out_dir / f"{split}.jsonl"
        if rows:
            write_jsonl_atomic(path, rows)
        elif path.exists():
            path.unlink()  # mlx-lm's loader fails on an empty file; a stale one would mislead it
        report.counts[split] = len(rows)
        if labelled and rows:
            report.labels[split] = Counter(str(r.get("label")) for r in rows)


def _mix_into_train(train: list[dict], general: list[Example], cfg: PrepareConfig, tokenizer, inline: bool,
                    report: PrepareReport) -> list[dict]:
    """Train rows with round(mix_ratio x their count) general rows spread among them (no persona added to those)."""
    chosen, note = sample_mix(general, len(train), cfg.mix_ratio, cfg.seed)
    if note:
        report.notes.append(note)
    rows = [{**to_output_row(ex, cfg.format, None, tokenizer, inline), "mixed": True} for ex in chosen]
    report.mixed = {"file": cfg.mix, "ratio": cfg.mix_ratio, "persona": len(train), "rows": len(rows)}
    return interleave(train, rows, cfg.seed)


def check_paths(inputs: list, out_dir: str | Path, cfg: PrepareConfig) -> Path:
    """Settings and paths checked before any work: the split, the inputs, an output folder that none of them
    is (nor a split file it writes), and a --save-hf folder that can be replaced without loss."""
    parse_split(cfg.split)
    check_mix(cfg.mix, cfg.mix_ratio)
    if cfg.split_by not in SPLIT_MODES:
        raise ConfigError(f"unknown split_by '{cfg.split_by}'", path="prepare.split_by (--split-by)",
                          fix=f"valid: {', '.join(SPLIT_MODES)}")
    if not inputs:
        raise InputError("no input files", fix="pass files: dantes-mlx prepare PAIRS.jsonl -o DIR")
    out_dir = Path(out_dir)
    writes = [out_dir / f"{split}.jsonl" for split in SPLITS] + [out_dir / PREPARE_REPORT]
    check_output(out_dir, kind="dir", inputs=[*inputs, *([cfg.mix] if cfg.mix else [])], writes=writes)
    if cfg.save_hf:
        _check_hf_dir(Path(cfg.save_hf), [Path(p) for p in inputs] + [out_dir])
    return out_dir


def _check_hf_dir(folder: Path, keep: list[Path]) -> None:
    """--save-hf replaces its folder whole: refuse one holding an input or the dataset, or anything but a
    DatasetDict saved before."""
    check_output(folder, kind="dir", inputs=keep, flag="--save-hf")
    inside = next((p for p in keep if same_file(folder, p) or folder.resolve() in p.resolve().parents), None)
    if inside is not None:
        raise InputError(f"--save-hf would replace a folder that holds {inside}", path=folder,
                         fix="give --save-hf a folder of its own, e.g. data/dataset_hf")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "dataset_dict.json").is_file():
        raise InputError("--save-hf would replace this folder, which is not a saved DatasetDict", path=folder,
                         fix="give --save-hf a new or empty folder (a DatasetDict saved before is replaced)")


def prepare(inputs: list[str | Path], out_dir: str | Path, cfg: PrepareConfig, persona: str | None = None,
            tokenizer=None, token_note: str = "", batch_size: int | None = None) -> PrepareReport:
    """Read, clean, group, dedupe, split and write `{train,valid,test}.jsonl`, then validate the folder."""
    out_dir = check_paths(inputs, out_dir, cfg)
    with output_lock(out_dir):
        return _prepare(inputs, out_dir, cfg, persona, tokenizer, token_note, batch_size)


def _prepare(inputs: list[str | Path], out_dir: Path, cfg: PrepareConfig, persona: str | None, tokenizer,
             token_note: str, batch_size: int | None) -> PrepareReport:
    ratios = parse_split(cfg.split)
    report = PrepareReport(str(out_dir), split_by=cfg.split_by)
    per_file = _read_inputs([Path(p) for p in inputs], report)
    general = read_mix(cfg.mix) if cfg.mix and cfg.mix_ratio > 0 else []  # a bad mix file fails before any write
    if cfg.mix and not cfg.mix_ratio:
        report.notes.append(f"--mix {cfg.mix} with mix_ratio 0: nothing mixed (give --mix-ratio, e.g. 0.2)")
    keys = _group_keys(per_file, cfg, report)  # before dedupe: consecutive runs need the file's order
    examples = [ex for examples in per_file for ex in examples]
    if not examples:
        raise InputError("no valid rows left", path=inputs[0], fix="see the rows listed above")
    examples, keys = _dedupe(examples, keys, cfg, report)
    groups = group_ids(keys)
    report.groups = len(set(groups))
    labelled = infer_labels(examples)
    report.stratified = bool(cfg.stratify and labelled)
    labels = [ex.label for ex in examples] if report.stratified else None
    if cfg.split_by == "row":
        names = split_within_groups(groups, ratios, cfg.seed, labels)
        if report.groups == len(groups):
            report.notes.append("--split-by row: no source has more than one row, so every row stayed in train "
                                "(memorisation needs several wordings per fact, e.g. `generate --facts` with K > 1)")
    else:
        names = split_groups(groups, ratios, cfg.seed, labels)
    system, inline = _system_plan(examples, cfg, persona, tokenizer, report)
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for ex, name, group in zip(examples, names, groups):
        row = to_output_row(ex, cfg.format, system, tokenizer, inline)
        if cfg.group_key or cfg.group_consecutive:
            row["group"] = f"g{group:05d}"
        splits[name].append(row)
    if general:
        splits["train"] = _mix_into_train(splits["train"], general, cfg, tokenizer, inline, report)
    _write_splits(splits, out_dir, labelled, report)
    if cfg.save_hf:
        report.hf_dir = str(save_hf(splits, cfg.save_hf))
    if cfg.hub_repo:
        report.hub_repo = push_hf(splits, cfg.hub_repo, cfg.hub_private)
    report.validation = validate_dir(out_dir, tokenizer, token_note, cfg.max_seq_length, cfg.near_dup_threshold,
                                     batch_size=batch_size, split_by=cfg.split_by)
    write_text_atomic(out_dir / PREPARE_REPORT, json.dumps(report.to_dict(), ensure_ascii=False, indent=1))
    return report
