"""The prepared dataset a run trains on: its rows in one mlx-lm format, their step count, the rows that would
train on nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dantes_mlx.errors import ConfigError, InputError
from dantes_mlx.store import read_jsonl

if TYPE_CHECKING:
    from dantes_mlx.config import TrainConfig


@dataclass
class DatasetInfo:
    """The prepared dataset a run trains on."""
    format: str              # chat, completions or text (mlx-lm's formats)
    train: list[dict]
    valid: list[dict]


def row_format(row: dict, path: Path, line: int) -> str:
    """mlx-lm's format of one row, or InputError naming file:line."""
    if isinstance(row.get("messages"), list):
        return "chat"
    if "prompt" in row and "completion" in row:
        return "completions"
    if isinstance(row.get("text"), str):
        return "text"
    raise InputError("row is neither chat ({'messages': [...]}), completions ({'prompt', 'completion'}) "
                     "nor text ({'text'})", path=path, line=line, fix="rebuild it with `dantes-mlx prepare`")


def read_split(path: Path, fmt: str | None = None) -> tuple[list[dict], str | None]:
    """Rows of one split file (none when absent), all in one mlx-lm format (`fmt`, when already known)."""
    rows = []
    for line, row in (read_jsonl(path) if path.is_file() else ()):
        this = row_format(row, path, line)
        if fmt is not None and this != fmt:
            raise InputError(f"{this} row in a {fmt} dataset", path=path, line=line,
                             fix="use one format for every row (see `dantes-mlx validate`)")
        fmt = this
        rows.append(row)
    return rows, fmt


def load_dataset(data_dir: str | Path) -> DatasetInfo:
    """train.jsonl (required) and valid.jsonl (optional) rows, all in one mlx-lm format."""
    data_dir = Path(data_dir)
    train_path = data_dir / "train.jsonl"
    if not train_path.is_file():
        raise InputError("no train.jsonl in the dataset folder", path=data_dir,
                         fix="run `dantes-mlx prepare` or pass --data DIR holding train/valid/test.jsonl")
    splits, fmt = {}, None
    for name in ("train", "valid"):
        splits[name], fmt = read_split(data_dir / f"{name}.jsonl", fmt)
    if not splits["train"]:
        raise InputError("train.jsonl is empty", path=train_path, fix="run `dantes-mlx prepare` again")
    return DatasetInfo(fmt, splits["train"], splits["valid"])


def validation_note(data_dir: str | Path, n_valid: int, batch_size: int) -> str | None:
    """Why a run has no validation loss (no valid.jsonl, or fewer rows than a batch), or None when it has one."""
    path = Path(data_dir) / "valid.jsonl"
    if not path.is_file():
        return (f"note: no valid.jsonl in {data_dir}: training goes on with no validation loss (nothing shows "
                "overfitting); `dantes-mlx prepare` writes train/valid/test.jsonl (prepare.split)")
    if n_valid < batch_size:
        return (f"note: {path} has {n_valid} rows, fewer than batch_size={batch_size}: no validation loss this "
                "run; add rows (a larger valid share in prepare.split) or lower batch_size")
    return None


def resolve_iters(cfg: "TrainConfig", n_train: int) -> int:
    """Training steps: `iters`, or `epochs` full passes over train.jsonl (one step = one batch)."""
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {cfg.batch_size}", path="train.batch_size",
                          fix="set batch_size to 1 or more")
    if n_train < cfg.batch_size:
        raise ConfigError(f"train.jsonl has {n_train} rows, fewer than batch_size={cfg.batch_size}",
                          path="train.batch_size", fix=f"set batch_size to {n_train} or less, or add data")
    if cfg.epochs > 0:
        return cfg.epochs * (n_train // cfg.batch_size)
    if cfg.iters < 1:
        raise ConfigError(f"iters must be positive, got {cfg.iters}", path="train.iters",
                          fix="set iters > 0 or epochs > 0")
    return cfg.iters


def check_dropped_system(tokenizer, messages: list[dict], mask: bool, path: Path, say) -> None:
    """Mistral v0.3's template drops the system message of a conversation ending with the answer, but keeps
    it in the prompt mask_prompt masks: the mask then covers the answer (a NaN or truncated loss). Any backend
    that masks as mlx-lm does calls this with its first training row."""
    if not messages or messages[0].get("role") != "system":
        return
    if messages[0].get("content", "") in tokenizer.apply_chat_template(messages, tokenize=False):
        return
    if mask:
        raise InputError("this chat template drops the system message from a training row but keeps it in "
                         "the prompt that mask_prompt masks (Mistral v0.3's does), so the mask covers the "
                         "answer", path=path, line=1,
                         fix="rebuild the rows with `dantes-mlx prepare` (it folds the persona into the user "
                             "turn), or set train.mask_prompt: false (the persona is then still not learnt)")
    say(f"warning: {path}: this chat template drops the system message from training rows (Mistral v0.3's "
        "does), so the persona in it is not learnt; `dantes-mlx prepare` folds it into the user turn")


def check_answers_fit(rows: list[tuple[int, int]], max_seq_length: int, batch_rows: int, path: Path, say) -> None:
    """Rows (tokens, prompt tokens) whose prompt alone fills max_seq_length keep no answer token after
    truncation; a batch of them has a NaN loss that poisons the adapter: warn about a few, refuse enough to
    fill a batch of `batch_rows` (rows per process)."""
    empty = [i for i, (length, offset) in enumerate(rows) if offset >= min(length, max_seq_length)]
    if not empty:
        return
    line = [n for n, _ in read_jsonl(path)][empty[0]]
    fix = (f"raise train.max_seq_length, or drop the over-long rows: "
           f"`dantes-mlx validate {path.parent} --max-seq-length {max_seq_length} --drop`")
    if len(empty) >= max(batch_rows, 1):
        raise InputError(f"{len(empty)} rows keep no answer token within max_seq_length={max_seq_length} (the "
                         "prompt alone fills it): a batch of them has a NaN loss that ruins the adapter",
                         path=path, line=line, fix=fix)
    say(f"warning: {len(empty)} row{'s' if len(empty) > 1 else ''} of {path} (first: line {line}) keep no answer "
        f"token: the prompt alone is max_seq_length={max_seq_length} tokens or more; they train on nothing ({fix})")


def assistant_turns(messages: list[dict]) -> int:
    """How many assistant turns a conversation holds (more than one: mlx-lm's mask_prompt would train only the last)."""
    return sum(m.get("role") == "assistant" for m in messages)


def _template_ids(tokenizer, messages: list[dict], tools=None, **kwargs) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, tools=tools, return_dict=False, **kwargs))


def assistant_token_mask(tokenizer, messages: list[dict], tools=None) -> tuple[list[int], list[int]]:
    """(token ids, 0/1 per token) of a chat row: 1 on every assistant turn (its words and the template's end of
    turn), 0 on system and user turns and on each turn's header.

    Turn i spans from the conversation before it with the generation prompt to the conversation up to it; both
    must be prefixes of the whole row's tokens, else the template rewrites earlier turns and no mask is exact.
    """
    ids = _template_ids(tokenizer, messages, tools)
    mask = [0] * len(ids)
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        head = _template_ids(tokenizer, messages[:i], tools, add_generation_prompt=True)
        turn = _template_ids(tokenizer, messages[:i + 1], tools)
        if ids[:len(turn)] != turn or turn[:len(head)] != head:
            raise InputError(f"the chat template renders assistant turn {i} differently once later turns follow "
                             "(it rewrites earlier turns), so its tokens cannot be masked exactly",
                             fix="train on one exchange per row (`dantes-mlx generate --turns 1`), or use a base "
                                 "model whose template keeps earlier turns as written")
        mask[len(head):len(turn)] = [1] * (len(turn) - len(head))
    return ids, mask


def first_trained(mask: list[int]) -> int:
    """Index of the first token a mask trains (its length when none): what check_answers_fit calls the offset."""
    return next((i for i, m in enumerate(mask) if m), len(mask))
