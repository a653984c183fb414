"""Check a dataset folder as fine-tuning services do: JSON, roles, content, token lengths, cross-split leaks."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from dantes_mlx.dataset.formats import CONTROL_CHARS, conversation_problems, template_drops_system
from dantes_mlx.dataset.split import SPLITS, near_duplicate_qa, strip_template
from dantes_mlx.errors import DantesError, InputError
from dantes_mlx.fr.text import fold
from dantes_mlx.outputs import output_lock
from dantes_mlx.store import write_bytes_atomic, write_jsonl_atomic

FIX_MODES = ("truncate", "drop")
PREPARE_REPORT = "prepare_report.json"  # written by `prepare` beside the splits; records how they were split


@dataclass
class Problem:
    """One finding, located by file and line."""
    path: str
    line: int | None
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.severity}: {self.message}"


@dataclass
class Row:
    """A parsed line of a split file."""
    split: str
    path: str
    line: int
    data: dict
    fmt: str | None

    @property
    def where(self) -> str:
        return f"{Path(self.path).name}:{self.line}"


@dataclass
class ValidationReport:
    """Everything `validate` found; `errors` non-empty means the folder is not ready to train on."""
    folder: str
    rows: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)
    token_stats: dict = field(default_factory=dict)
    token_note: str = ""
    too_long: list = field(default_factory=list)
    fixed: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    backups: list = field(default_factory=list)  # (rewritten split file, where its original was kept)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def failure(self) -> DantesError | None:
        """The error a folder with errors ends `validate` with (they are listed in the summary)."""
        if not self.errors:
            return None
        return DantesError(f"{len(self.errors)} error(s); see the list above", path=self.folder,
                           fix="repair the rows named above, or rebuild the folder with `dantes-mlx prepare`")

    def summary(self) -> str:
        lines = [f"{self.folder}: " + ", ".join(f"{s} {n} rows" for s, n in self.rows.items())]
        lines.append(f"tokens: {self.token_note}")
        for split, s in self.token_stats.items():
            lines.append(f"  {split:5s} min {s['min']}  median {s['median']:.0f}  p95 {s['p95']:.0f}  max {s['max']}")
        if self.too_long:
            lines.append(f"{len(self.too_long)} row(s) over max_seq_length")
        for key, n in self.fixed.items():
            lines.append(f"{key}: {n} row(s), files rewritten")
        lines += [f"original of {Path(path).name} kept as {backup}" for path, backup in self.backups]
        lines += [f"note: {n}" for n in self.notes]
        lines += [str(p) for p in self.problems]
        warnings = len(self.problems) - len(self.errors)
        lines.append(f"{len(self.errors)} error(s), {warnings} warning(s)")
        return "\n".join(lines)


def row_format(data: dict) -> str | None:
    """The mlx-lm format of a row, in the order mlx_lm.tuner.datasets.create_dataset checks them."""
    if "prompt" in data and "completion" in data:
        return "completions"
    if "messages" in data:
        return "chat"
    if "text" in data:
        return "text"
    return None


def row_messages(row: dict, fmt: str | None) -> list[dict]:
    """The conversation a row trains on, as mlx-lm builds it."""
    if fmt == "chat":
        return row["messages"]
    if fmt == "completions":
        return [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
    return []


def read_split(path: Path, split: str) -> tuple[list[Row], list[Problem]]:
    """Rows of one split file; undecodable or non-JSON lines become problems with their line number."""
    rows, problems = [], []
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(Problem(str(path), lineno, f"invalid UTF-8 at byte {exc.start}"))
            continue
        if not text.strip():
            problems.append(Problem(str(path), lineno, "blank line (mlx-lm's loader fails on it)"))
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(Problem(str(path), lineno, f"invalid JSON: {exc.msg} at column {exc.colno}"))
            continue
        if not isinstance(data, dict):
            problems.append(Problem(str(path), lineno, f"expected a JSON object, got {type(data).__name__}"))
            continue
        rows.append(Row(split, str(path), lineno, data, row_format(data)))
    return rows, problems


def row_problems(row: Row) -> list[str]:
    """Structural problems of one row in its mlx-lm format."""
    data, fmt = row.data, row.fmt
    if fmt is None:
        return [f"no training fields (keys: {sorted(data)}); expected messages, prompt/completion or text"]
    if fmt == "chat":
        found = conversation_problems(data["messages"])
    elif fmt == "completions":
        found = conversation_problems(row_messages(data, fmt))
        found = [p.replace("user content at message 0", "prompt").replace("assistant content at message 1",
                                                                           "completion") for p in found]
    else:
        text = data["text"]
        found = [] if isinstance(text, str) and text.strip() else ["empty text"]
    texts = [m.get("content") for m in row_messages(data, fmt) if isinstance(m, dict)] if fmt != "text" \
        else [data["text"]]
    if any(isinstance(t, str) and CONTROL_CHARS.search(t) for t in texts):
        found.append("control characters in the text (invisible, and never wanted in training data)")
    return found


def count_tokens(tokenizer, data: dict, fmt: str | None) -> int:
    """Tokens mlx-lm will train on for this row (chat template for chat/completions, EOS added to text)."""
    if fmt == "text":
        ids = tokenizer.encode(data["text"])
        return len(ids) + (0 if ids and ids[-1] == tokenizer.eos_token_id else 1)
    return len(tokenizer.apply_chat_template(row_messages(data, fmt), tools=data.get("tools"), tokenize=True,
                                             return_dict=False))


def truncate_row(tokenizer, data: dict, fmt: str | None, limit: int) -> dict | None:
    """The row with its final answer cut (at a word) to fit `limit` tokens, or None when even one word won't fit."""
    key = "text" if fmt == "text" else "completion" if fmt == "completions" else None
    answer = data[key] if key else data["messages"][-1].get("content")
    if not isinstance(answer, str):  # a final tool call (mlx-lm's tools rows) has no words to cut
        return None
    words = answer.split(" ")

    def cut(n: int) -> dict:
        new = json.loads(json.dumps(data))
        if key:
            new[key] = " ".join(words[:n])
        else:
            new["messages"][-1]["content"] = " ".join(words[:n])
        return new

    lo, hi = 1, len(words)
    if count_tokens(tokenizer, cut(1), fmt) > limit:
        return None
    while lo < hi:  # the largest word count that fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if count_tokens(tokenizer, cut(mid), fmt) <= limit else (lo, mid - 1)
    return cut(lo)


def _percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))])


def token_summary(counts: list[int]) -> dict:
    return {"count": len(counts), "min": min(counts), "median": statistics.median(counts),
            "p95": _percentile(counts, 0.95), "max": max(counts)}


def qa_pairs(row: Row) -> list[tuple[str, str]]:
    """(question, answer) pairs of a row: each user turn with the assistant turn that follows it."""
    if row.fmt == "text":
        return [("", row.data["text"])] if isinstance(row.data.get("text"), str) else []
    messages = [m for m in row_messages(row.data, row.fmt) if isinstance(m, dict)]
    return [(str(a.get("content")), str(b.get("content") or json.dumps(b.get("tool_calls"), sort_keys=True)))
            for a, b in zip(messages, messages[1:]) if a.get("role") == "user" and b.get("role") == "assistant"]


def leak_problems(rows: list[Row], threshold: float, shared_sources: bool = False) -> list[Problem]:
    """Identical or near-identical (question, answer) pairs, and (unless `shared_sources`, as `--split-by row`
    intends) a source_id/group, across splits."""
    problems: list[Problem] = []
    for key in () if shared_sources else ("source_id", "group"):
        seen: dict[str, dict[str, Row]] = defaultdict(dict)
        for row in rows:
            cited = row.data.get("source_ids") if key == "source_id" else None  # a conversation's citations
            values = [row.data.get(key), *(cited if isinstance(cited, list) else [])]
            for value in dict.fromkeys(str(v) for v in values if v is not None):
                splits = seen[value]
                if row.split not in splits:
                    for other in splits.values():
                        problems.append(Problem(row.path, row.line, f"leak: {key} '{value}' is also in {other.where}"))
                    splits[row.split] = row
    pairs = [(row, q, a) for row in rows for q, a in qa_pairs(row)]
    first: dict[str, Row] = {}
    exact: set[tuple[int, int]] = set()
    for n, (row, q, a) in enumerate(pairs):
        key = fold(q) + "\x1f" + fold(a)
        other = first.setdefault(key, row)
        if other.split != row.split:
            problems.append(Problem(row.path, row.line, f"leak: same (question, answer) as {other.where}"))
            exact.add((id(other), id(row)))
    if threshold < 1.0:
        questions = strip_template([q for _, q, _ in pairs])  # a shared instruction is not a leak
        for i, j, score in near_duplicate_qa(questions, [a for _, _, a in pairs], threshold):
            a_row, b_row = pairs[i][0], pairs[j][0]
            if a_row.split != b_row.split and (id(a_row), id(b_row)) not in exact and score < 1.0:
                problems.append(Problem(b_row.path, b_row.line, f"leak: near-identical (question, answer) to "
                                                                f"{a_row.where} (Jaccard {score:.2f})"))
    return problems


def prepared_split_by(folder: Path) -> str:
    """How `prepare` split this folder, from its PREPARE_REPORT; 'group' when there is none to read."""
    try:
        mode = json.loads((folder / PREPARE_REPORT).read_text(encoding="utf-8")).get("split_by")
    except (OSError, ValueError, AttributeError):
        return "group"
    return mode if isinstance(mode, str) else "group"


def split_files(folder: Path) -> dict[str, Path]:
    """The split files mlx-lm reads from a folder."""
    if not folder.is_dir():
        raise InputError("dataset folder not found", path=folder, fix="run `dantes-mlx prepare` first")
    files = {s: folder / f"{s}.jsonl" for s in SPLITS if (folder / f"{s}.jsonl").is_file()}
    if not files:
        raise InputError("no train.jsonl, valid.jsonl or test.jsonl", path=folder,
                         fix="point at the folder `dantes-mlx prepare -o` wrote")
    return files


def _check_structure(report: ValidationReport, files: dict[str, Path]) -> tuple[list[Row], set[str]]:
    rows: list[Row] = []
    broken: set[str] = set()
    formats: dict[str, Row] = {}
    for split, path in files.items():
        split_rows, problems = read_split(path, split)
        report.problems += problems
        if problems:
            broken.add(split)
        report.rows[split] = len(split_rows)
        for row in split_rows:
            report.problems += [Problem(row.path, row.line, msg) for msg in row_problems(row)]
            if row.fmt and row.fmt != formats.setdefault(split, row).fmt:
                ref = formats[split]
                report.problems.append(Problem(row.path, row.line, f"{row.fmt} row in a file that starts as "
                                                                   f"{ref.fmt} ({ref.where}): mlx-lm reads every "
                                                                   "row with the first row's format"))
        anonymous = [r for r in split_rows if r.fmt and "source_id" not in r.data]
        if anonymous:
            report.problems.append(Problem(anonymous[0].path, anonymous[0].line, (
                f"{len(anonymous)} row(s) without source_id (this is the first): the leak check cannot follow "
                "their provenance; `dantes-mlx prepare` adds it"), "warning"))
        rows += split_rows
    if "train" not in files:
        report.problems.append(Problem(str(next(iter(files.values())).parent), None, "no train.jsonl"))
    elif "valid" not in files:
        report.problems.append(Problem(str(files["train"].parent), None,
                                       "no valid.jsonl: training will run without validation loss", "warning"))
    return rows, broken


def _check_tokens(report: ValidationReport, rows: list[Row], tokenizer, max_seq_length: int) -> None:
    counts: dict[str, list[int]] = defaultdict(list)
    with_system = next((r for r in rows if r.fmt == "chat" and not row_problems(r)
                        and r.data["messages"][0].get("role") == "system"), None)
    if with_system is not None and template_drops_system(tokenizer):
        report.problems.append(Problem(with_system.path, with_system.line, (
            "the tokenizer's chat template drops the system message of rows that end with the answer "
            "(Mistral v0.3 does): training never sees it, and mlx-lm's prompt masking, which renders the "
            "prompt with it, then masks part or all of the answer; `dantes-mlx prepare --tokenizer ...` folds "
            "it into the last question instead"), "warning"))
    for row in rows:
        if row.fmt is None or row_problems(row):
            continue
        try:
            n = count_tokens(tokenizer, row.data, row.fmt)
        except Exception as exc:  # a template that rejects the row is exactly what training would hit
            report.problems.append(Problem(row.path, row.line, f"the tokenizer's chat template fails: {exc}"))
            continue
        counts[row.split].append(n)
        if n > max_seq_length:
            report.too_long.append((row, n))
            report.problems.append(Problem(row.path, row.line, f"{n} tokens, over max_seq_length {max_seq_length} "
                                                               "(mlx-lm cuts it there: the end of the answer is never "
                                                               "learnt)"))
    report.token_stats = {s: token_summary(c) for s, c in counts.items() if c}


def _apply_fix(files: dict[str, Path], rows: list[Row], broken: set[str], too_long: list,
               tokenizer, max_seq_length: int, fix: str) -> tuple[dict, list]:
    """Rewrite (atomically) the split files holding over-long rows: truncate their answer or drop them. Each
    original is kept beside (SPLIT.jsonl.orig); a fix that would leave a split with no row writes nothing.
    (counts, [(rewritten file, its kept original)])."""
    long_rows = {id(row) for row, _ in too_long}
    fixed, plans = {"truncated": 0, "dropped": 0}, {}
    for split, path in files.items():
        if split in broken or not any(r.split == split and id(r) in long_rows for r in rows):
            continue
        kept = []
        for row in (r for r in rows if r.split == split):
            new = truncate_row(tokenizer, row.data, row.fmt, max_seq_length) \
                if id(row) in long_rows and fix == "truncate" else None
            if id(row) not in long_rows:
                kept.append(row.data)
            elif new is not None:
                kept.append(new)
                fixed["truncated"] += 1
            else:
                fixed["dropped"] += 1
        if not kept:
            raise InputError(f"--{fix} would leave no row in {path.name}: every row is over max_seq_length="
                             f"{max_seq_length}{' and cannot be cut to fit' if fix == 'truncate' else ''}; nothing "
                             "was rewritten", path=path,
                             fix="raise --max-seq-length (prepare/train max_seq_length) to what the rows need, or "
                                 "rebuild the folder with `dantes-mlx prepare`")
        plans[path] = kept
    backups = [(path, keep_original(path)) for path in plans]
    for path, kept in plans.items():
        write_jsonl_atomic(path, kept)
    return {k: n for k, n in fixed.items() if n}, backups


def keep_original(path: Path) -> Path:
    """Copy a file about to be rewritten to PATH.orig (PATH.orig.2, .3... when taken: no backup is replaced)."""
    backup, number = path.with_name(path.name + ".orig"), 1
    while backup.exists():
        number += 1
        backup = path.with_name(f"{path.name}.orig.{number}")
    write_bytes_atomic(backup, path.read_bytes())
    return backup


def _check_batch_size(report: ValidationReport, files: dict[str, Path], batch_size: int) -> None:
    for split, n in report.rows.items():
        if n < batch_size:  # mlx-lm's iterate_batches raises ValueError on such a split
            report.problems.append(Problem(str(files[split]), None, f"{n} row(s), fewer than the batch size "
                                                                   f"{batch_size}: mlx-lm refuses to batch it",
                                           "warning" if split == "test" else "error"))


def validate_dir(folder: str | Path, tokenizer=None, token_note: str = "", max_seq_length: int = 2048,
                 near_threshold: float = 0.9, fix: str | None = None, batch_size: int | None = None,
                 split_by: str | None = None) -> ValidationReport:
    """Validate train/valid/test.jsonl of a folder; `fix` ('truncate' or 'drop') rewrites over-long rows.

    `split_by` is prepare's mode (None: read from the folder's PREPARE_REPORT); 'row' shares sources on purpose.
    """
    if fix is not None and fix not in FIX_MODES:
        raise InputError(f"unknown fix '{fix}'", fix=f"valid: {', '.join(FIX_MODES)}")
    folder = Path(folder)
    files = split_files(folder)
    if not token_note:
        token_note = "tokenizer given" if tokenizer is not None else "skipped: no tokenizer given"
    report = ValidationReport(str(folder), token_note=token_note)
    rows, broken = _check_structure(report, files)
    if tokenizer is not None:
        _check_tokens(report, rows, tokenizer, max_seq_length)
        if fix and report.too_long:
            with output_lock(folder):
                fixed, backups = _apply_fix(files, rows, broken, report.too_long, tokenizer, max_seq_length, fix)
            report = validate_dir(folder, tokenizer, token_note, max_seq_length, near_threshold, None, batch_size,
                                  split_by)
            report.fixed, report.backups = fixed, backups
            return report
    elif fix:
        report.problems.append(Problem(str(folder), None, f"--{fix} needs a tokenizer; nothing rewritten"))
    if batch_size:
        _check_batch_size(report, files, batch_size)
    shared = (split_by or prepared_split_by(folder)) == "row"
    if shared:
        report.notes.append("split by row (memorisation): shared sources expected")
    report.problems += leak_problems([r for r in rows if r.fmt], near_threshold, shared)
    return report
