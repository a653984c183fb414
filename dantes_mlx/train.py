"""Training stage, backend-agnostic: base-model download, dataset checks, metrics, loss plot, resume state."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dantes_mlx.errors import ConfigError, InputError, ModelError
from dantes_mlx.outputs import check_output, output_lock
from dantes_mlx.store import read_jsonl, write_jsonl_atomic, write_text_atomic

if TYPE_CHECKING:
    from dantes_mlx.backends import TrainResult
    from dantes_mlx.config import TrainConfig

# What a training run needs from a model repo: configs, weights, tokenizer (no custom code: we never
# trust remote code, and no .bin/.pth duplicates).
MODEL_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "tiktoken.model",
                  "*.txt", "*.jsonl", "*.jinja"]
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"
STATE_FILE = "train_state.json"
CONFIG_FILE = "train_config.yaml"
TEMPLATE_FILE = "chat_template.jinja"
BASE_FINGERPRINT_FILE = "base_fingerprint.json"  # which base the adapter was trained on; export checks it
DATASET_MARKER = "dataset.sha256"  # what the run in an adapter folder learnt from; --resume checks it
_SAMPLE_BYTES = 1 << 16
# config.json keys that change when a model is only re-saved, not when its weights change.
_CONFIG_NOISE = ("_name_or_path", "transformers_version")
# Settings that change the adapter's shape: a resumed run must keep them.
SHAPE_SETTINGS = ("base_model", "fine_tune_type", "rank", "num_layers", "target_modules", "quantize_base")


# ---------------------------------------------------------------- base model
def resolve_model(base: str, allow_patterns: list[str] | None = None) -> Path:
    """A local model folder: `base` itself when it is a folder, else a Hugging Face download."""
    path = Path(base).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError("not a model folder (no config.json)", path=path,
                             fix="point train.base_model at a Hugging Face model folder or repo id")
        return path
    if path.exists() or base.startswith((".", "/", "~")) or base.count("/") != 1:
        raise ModelError(f"model folder not found and '{base}' is not a Hugging Face repo id",
                         path=base, fix="use a local folder or an id like mlx-community/Mistral-7B-Instruct-v0.3-4bit")
    return Path(_download(base, allow_patterns or MODEL_PATTERNS))


def _download(repo_id: str, allow_patterns: list[str]) -> str:
    """snapshot_download with errors that say what to do (licence click-through, login, offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)

    url = f"https://huggingface.co/{repo_id}"
    gated_fix = (f"open {url} while logged in, accept the licence (click-through), then run "
                 "`hf auth login` (or set HF_TOKEN) on this machine and retry")
    try:
        print(f"Downloading {repo_id} from Hugging Face (cached after the first time)...", file=sys.stderr)
        return snapshot_download(repo_id, allow_patterns=allow_patterns)
    except GatedRepoError as exc:
        raise ModelError(f"'{repo_id}' is a gated repo: access refused until its licence is accepted",
                         path=url, fix=gated_fix) from exc
    except RepositoryNotFoundError as exc:
        raise ModelError(f"repo '{repo_id}' not found (or private)", path=url,
                         fix="check the id; for a private repo run `hf auth login`") from exc
    except LocalEntryNotFoundError as exc:
        raise ModelError(f"cannot download '{repo_id}': no connection and it is not in the local cache",
                         path=url, fix="connect once to download it, or set train.base_model to a local folder") from exc
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise ModelError(f"Hugging Face refused '{repo_id}' (HTTP {status})", path=url, fix=gated_fix) from exc
        raise ModelError(f"download of '{repo_id}' failed: {exc}", path=url, fix="retry; check your connection") from exc


def model_fingerprint(model_dir: str | Path) -> dict:
    """A cheap content hash of a model folder: config.json (key order and re-save noise aside) and, per weight
    file, its safetensors header and 64 KiB at the start, middle and end of its data (< 1 MiB read for a 7B)."""
    import hashlib

    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    digest = hashlib.sha256(json.dumps({k: v for k, v in config.items() if k not in _CONFIG_NOISE},
                                       sort_keys=True).encode())
    index = model_dir / "model.safetensors.index.json"
    names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())) if index.is_file() \
        else sorted(p.name for p in model_dir.glob("*.safetensors") if not p.name.startswith("consolidated"))
    for name in names:  # consolidated*.safetensors: Mistral's duplicate of the same weights in another layout
        with open(model_dir / name, "rb") as fh:
            header = int.from_bytes(fh.read(8), "little")
            digest.update(name.encode() + fh.read(header))
            end = fh.seek(0, os.SEEK_END)
            for offset in (8 + header, (8 + header + end - _SAMPLE_BYTES) // 2, end - _SAMPLE_BYTES):
                fh.seek(max(offset, 8 + header))
                digest.update(fh.read(_SAMPLE_BYTES))
    return {"sha256": digest.hexdigest(), "weight_files": names}


def write_base_fingerprint(base_model: str, adapter_dir: str | Path) -> Path | None:
    """Record in the adapter folder which base it was trained on (export refuses another); None when the
    base is neither a folder nor in the Hugging Face cache."""
    path = Path(base_model).expanduser()
    if not path.is_dir():
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(base_model, allow_patterns=MODEL_PATTERNS, local_files_only=True))
        except Exception:  # not downloaded here (another machine's run): nothing to fingerprint
            return None
    out = Path(adapter_dir) / BASE_FINGERPRINT_FILE
    write_text_atomic(out, json.dumps({"base_model": base_model, **model_fingerprint(path)}, indent=2) + "\n")
    return out


# ---------------------------------------------------------------- dataset
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


# ---------------------------------------------------------------- metrics, plot, resolved config
class MetricsLog:
    """metrics.jsonl: one JSON object per train or validation report, appended as training goes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, row: dict) -> None:
        """Append one report; a NaN or infinite value is written as null and named in "non_finite" (strict JSON)."""
        bad = [key for key, value in row.items() if isinstance(value, float) and not math.isfinite(value)]
        if bad:
            row = {**{k: (None if k in bad else v) for k, v in row.items()}, "non_finite": bad}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            fh.flush()

    def rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [row for _, row in read_jsonl(self.path)]

    def keep_until(self, step: int) -> None:
        """Drop reports after `step` (written after the checkpoint a resumed run starts from)."""
        if self.path.is_file():
            write_jsonl_atomic(self.path, [r for r in self.rows() if r.get("step", 0) <= step])

    def last(self, key: str):
        values = [r[key] for r in self.rows() if r.get(key) is not None]
        return values[-1] if values else None


def plot_losses(metrics_path: str | Path, png_path: str | Path, title: str = "") -> Path:
    """Render train and validation loss against step to a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = MetricsLog(metrics_path).rows()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key, label, style in (("train_loss", "train", "-"), ("val_loss", "valid", "o--")):
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), style, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or "training loss")
    ax.grid(alpha=0.3)
    if rows:
        ax.legend()
    png_path = Path(png_path)
    tmp = png_path.with_name(png_path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path


def write_resolved_config(cfg: "TrainConfig", adapter_dir: Path, **extra) -> Path:
    """train_config.yaml: every setting the run used (after defaults < YAML < flags) plus what it derived."""
    import yaml

    data = {"train": dataclasses.asdict(cfg), "derived": extra}
    path = Path(adapter_dir) / CONFIG_FILE
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def write_chat_template(template: str | None, adapter_dir: Path) -> Path | None:
    """The tokenizer's chat template next to the adapter (export and chat use the same one)."""
    if not template:
        return None
    path = Path(adapter_dir) / TEMPLATE_FILE
    write_text_atomic(path, template)
    return path


# ---------------------------------------------------------------- rows that would train on nothing
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


# ---------------------------------------------------------------- resume state
def checkpoint_name(step: int) -> str:
    """mlx-lm's numbered checkpoint file name."""
    return f"{step:07d}_adapters.safetensors"


def read_state(adapter_dir: Path, cfg: "TrainConfig") -> dict:
    """The state a --resume continues from; errors when absent or when shape settings changed."""
    path = Path(adapter_dir) / STATE_FILE
    if not path.is_file():
        raise ConfigError("nothing to resume: no checkpoint state", path=path,
                          fix="run without --resume to start training from scratch")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", path=path, line=exc.lineno,
                         fix="delete the file and train without --resume") from exc
    saved = state.get("config", {})
    changed = [key for key in SHAPE_SETTINGS if key in saved and saved[key] != getattr(cfg, key)]
    if changed:  # every one at once, not one per attempt
        now = ", ".join(f"{key}={getattr(cfg, key)!r}" for key in changed)
        then = ", ".join(f"{key}={saved[key]!r}" for key in changed)
        raise ConfigError(f"--resume with {now}, but the checkpoint was trained with {then}", path=path,
                          fix=f"keep {then} or train without --resume")
    if not (Path(adapter_dir) / state["checkpoint"]).is_file():
        raise ConfigError(f"checkpoint {state['checkpoint']} is missing", path=path,
                          fix="train without --resume")
    return state


def write_state(adapter_dir: Path, cfg: "TrainConfig", step: int, iters: int, checkpoint: str) -> None:
    """Record the last complete checkpoint (written after the checkpoint file itself)."""
    state = {"step": step, "iters": iters, "checkpoint": checkpoint, "config": dataclasses.asdict(cfg)}
    write_text_atomic(Path(adapter_dir) / STATE_FILE, json.dumps(state, indent=2, ensure_ascii=False))


def clear_run_outputs(adapter_dir: Path) -> None:
    """Remove what a previous run left (our files only), so a fresh run does not mix with it."""
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        return
    for child in adapter_dir.iterdir():
        # adapter_model.safetensors: a PEFT adapter left by another backend would shadow this run's
        ours = child.name in (METRICS_FILE, PLOT_FILE, STATE_FILE, BASE_FINGERPRINT_FILE, "optimizer.safetensors",
                              "adapter_model.safetensors")
        if ours or re.fullmatch(r"\d{7}_adapters\.safetensors", child.name):
            child.unlink()


# ---------------------------------------------------------------- a YAML written for mlx_lm.lora
# mlx_lm.lora key (or lora_parameters key) -> the train setting with the same meaning.
MLX_LM_KEYS = {"model": "base_model", "grad_accumulation_steps": "grad_accumulation", "keys": "target_modules",
               **{k: k for k in ("fine_tune_type", "optimizer", "num_layers", "batch_size", "iters", "val_batches",
                                 "learning_rate", "steps_per_report", "steps_per_eval", "save_every", "seed",
                                 "max_seq_length", "grad_checkpoint", "mask_prompt", "rank", "scale", "dropout")}}
# mlx_lm.lora's defaults (lora.py CONFIG_DEFAULTS) where ours differ: written out, the run stays mlx-lm's.
# Without lora_parameters.keys mlx-lm adapts every linear layer of a block (these for Llama/Mistral).
MLX_LM_DEFAULTS = {"iters": 1000, "learning_rate": 1e-5, "steps_per_eval": 200, "mask_prompt": False, "rank": 8,
                   "scale": 20.0, "dropout": 0.0, "lr_schedule": "constant", "warmup_steps": 0,
                   "target_modules": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                      "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]}
MLX_LM_SCHEDULES = {"cosine_decay": "cosine", "linear_schedule": "linear"}
_NO_REPORTING = "not supported: metrics.jsonl and loss.png in the adapter folder record the run"
MLX_LM_ELSEWHERE = {
    "data": "pass --data {value}", "adapter_path": "pass --adapter-path {value}",
    "resume_adapter_file": "no equivalent: --resume continues this tool's own last checkpoint in --adapter-path "
                           "(train_state.json, optimizer state included); it cannot start from another adapter file",
    "test": "run `dantes-mlx eval` after training (test loss and perplexity)", "test_batches": "see test",
    "report_to": _NO_REPORTING, "project_name": _NO_REPORTING,
    "optimizer_config": "not supported: the optimizer's own defaults apply",
    "hf_dataset": "not supported: `dantes-mlx prepare` writes a local dataset folder for --data",
    "trust_remote_code": "not supported: remote code is never run",
    "clear_cache_threshold": "not supported",
    **{k: "not supported: name the field prompt, completion, messages or text"
       for k in ("prompt_feature", "completion_feature", "chat_feature", "text_feature")},
}


def _as_float(value):
    """mlx_lm.lora's YAML loader reads 1e-5 as a float; PyYAML's safe loader as a string."""
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def translate_mlx_lm_config(data: dict) -> tuple[dict, list[str]]:
    """An mlx_lm.lora YAML as dantes.yaml's train settings, and one note per key that has no setting there."""
    settings, notes = {}, []
    flat = {**{k: v for k, v in data.items() if k != "lora_parameters"}, **(data.get("lora_parameters") or {})}
    for key, value in flat.items():
        if key in MLX_LM_KEYS:
            settings[MLX_LM_KEYS[key]] = _as_float(value) if key in ("learning_rate", "scale", "dropout") else value
        elif key == "lr_schedule" and value:
            notes.append(_translate_schedule(value, settings))
        elif key in MLX_LM_ELSEWHERE:
            notes.append(f"{key}: " + MLX_LM_ELSEWHERE[key].format(value=value))
        elif key not in ("train", "config", "lr_schedule"):
            notes.append(f"{key}: not an mlx_lm.lora setting either")
    defaults = {k: v for k, v in MLX_LM_DEFAULTS.items() if k not in settings}
    if "lr_schedule" in settings:
        defaults.pop("warmup_steps", None)
    if settings.get("fine_tune_type") == "full":
        defaults = {k: v for k, v in defaults.items() if k not in ("rank", "scale", "dropout", "target_modules")}
    if defaults:
        notes.append(f"mlx_lm.lora's defaults, written out where ours differ: {', '.join(defaults)}")
    return {**settings, **defaults}, notes


def _translate_schedule(spec, settings: dict) -> str:
    """mlx-lm's lr_schedule {name, arguments, warmup, warmup_init} as lr_schedule/warmup_steps (a note)."""
    name = spec.get("name") if isinstance(spec, dict) else None
    if name not in MLX_LM_SCHEDULES:
        return f"lr_schedule: {name!r} not supported: use lr_schedule constant, cosine or linear (with warmup_steps)"
    settings["lr_schedule"] = MLX_LM_SCHEDULES[name]
    settings["warmup_steps"] = int(spec.get("warmup", 0))
    if spec.get("arguments"):
        settings["learning_rate"] = _as_float(spec["arguments"][0])  # mlx-lm's peak rate, not learning_rate
    return (f"lr_schedule: {name} becomes {settings['lr_schedule']} with warmup_steps; its length and end value "
            "are not kept (ours goes from warmup to 0 over the run's updates) nor warmup_init (ours starts at 0)")


def read_mlx_lm_config(path: str | Path | None) -> dict | None:
    """The file's keys when it is a flat mlx_lm.lora config (no dantes.yaml section), else None."""
    import yaml

    from dantes_mlx.config import SECTIONS

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) if path else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict) or any(isinstance(data[k], dict) for k in set(data) & set(SECTIONS)):
        return None
    return data if set(data) & {"model", "data", "lora_parameters", "fine_tune_type", "adapter_path"} else None


def mlx_lm_config_error(path: str | Path, data: dict) -> ConfigError:
    """The error for a flat mlx_lm.lora YAML given as --config: its translation, ready to paste."""
    import yaml

    settings, notes = translate_mlx_lm_config(data)
    snippet = yaml.safe_dump({"train": settings}, sort_keys=False, allow_unicode=True, default_flow_style=None)
    return ConfigError("this is an mlx_lm.lora config (flat keys); dantes-mlx reads sections, training "
                       "settings under `train:`", path=path,
                       fix="put this in a dantes.yaml and pass it with --config:\n" + snippet
                           + (f"and for the other keys of {Path(path).name}:\n" if notes else "")
                           + "".join(f"  {note}\n" for note in notes))


def dataset_fingerprint(folder: Path) -> str:
    """sha256 of train.jsonl and valid.jsonl: what a training run learnt from."""
    digest = hashlib.sha256()
    for name in ("train.jsonl", "valid.jsonl"):
        path = Path(folder) / name
        digest.update(name.encode() + (path.read_bytes() if path.is_file() else b"-"))
    return digest.hexdigest()


def check_same_dataset(adapter_dir: Path, data_dir: Path, warn) -> None:
    """--resume continues only on the dataset the checkpoint was trained on."""
    marker = Path(adapter_dir) / DATASET_MARKER
    if not marker.is_file():
        warn(f"{adapter_dir} does not record its dataset (an older run): cannot check that --resume continues on "
             "the same one")
    elif marker.read_text(encoding="utf-8").strip() != dataset_fingerprint(data_dir):
        raise ConfigError(f"--resume on another dataset: {data_dir}/train.jsonl and valid.jsonl are not the files "
                          "the checkpoint was trained on", path=marker,
                          fix=f"resume with the --data folder of that run, or train this dataset from step 0 with "
                              f"--restart (or another --adapter-path)")


# ---------------------------------------------------------------- the stage
def check_unfinished(adapter_dir: Path) -> None:
    """Refuse to start a fresh run over an interrupted one: starting clears its checkpoints."""
    path = Path(adapter_dir) / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        step, iters = int(state["step"]), int(state["iters"])
    except (OSError, ValueError, KeyError, TypeError):  # no state, or one no resume could use anyway
        return
    if step < iters:
        raise ConfigError(f"{adapter_dir} holds an interrupted run (step {step} of {iters}); a fresh run would "
                          "delete its checkpoints", path=path,
                          fix="add --resume to continue it, or --restart to start again from step 0 "
                              "(or pick another --adapter-path)")


def train(cfg: "TrainConfig", data_dir: str | Path, adapter_dir: str | Path, resume: bool = False,
          warn=lambda message: print(f"warning: {message}", file=sys.stderr), restart: bool = False) -> "TrainResult":
    """Pick the backend cfg.backend names (or auto), check the settings against it, and train.

    Without `resume`, an interrupted run in `adapter_dir` is an error unless `restart` says to discard it;
    with it, the dataset must be the one the checkpoint was trained on."""
    if resume and restart:
        raise ConfigError("--resume and --restart contradict each other", fix="pass one of them")
    adapter_dir = check_output(adapter_dir, kind="dir", inputs=[data_dir], flag="--adapter-path")
    # Under mlx.launch (or MPI) every rank trains into one folder: rank 0 holds its lock for all of them.
    with output_lock(adapter_dir) if distributed_rank() == 0 else contextlib.nullcontext():
        return _train(cfg, Path(data_dir), adapter_dir, resume, warn, restart)


def distributed_rank() -> int:
    """This process's rank in a data-parallel launch (mlx.launch sets MLX_RANK; MPI its own), else 0."""
    for name in ("MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def _train(cfg: "TrainConfig", data_dir: Path, adapter_dir: Path, resume: bool, warn, restart: bool) -> "TrainResult":
    from dantes_mlx.backends import get_backend

    if not resume and not restart:
        check_unfinished(adapter_dir)
    if resume:
        check_same_dataset(adapter_dir, data_dir, warn)
    backend, warning = get_backend(cfg.backend)
    if warning:
        warn(warning)
    backend.check(cfg)
    adapter_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        write_text_atomic(adapter_dir / DATASET_MARKER, dataset_fingerprint(data_dir))
    result = backend.train(cfg, data_dir, adapter_dir, resume=resume)
    check_diverged(result, cfg)
    fingerprint = write_base_fingerprint(cfg.base_model, adapter_dir)
    if fingerprint:
        result.files["base_fingerprint"] = fingerprint
    else:
        warn(f"no fingerprint of {cfg.base_model} recorded (not found locally): export cannot check its base")
    return result


def check_diverged(result: "TrainResult", cfg: "TrainConfig") -> None:
    """A run whose loss became NaN or infinite left an unusable adapter: say so instead of a success."""
    losses = {"train": result.train_loss, "valid": result.val_loss}
    bad = [name for name, value in losses.items() if isinstance(value, float) and not math.isfinite(value)]
    metrics = MetricsLog(Path(result.adapter_dir) / METRICS_FILE)
    first = next((r.get("step") for r in metrics.rows() if r.get("non_finite")), None)
    if bad or first is not None:
        where = f" from step {first}" if first is not None else ""
        raise ModelError(f"training diverged: the {' and '.join(bad) or 'reported'} loss is not a number{where}; "
                         "the adapter is unusable", path=metrics.path,
                         fix=f"lower learning_rate (now {cfg.learning_rate:g}), check the data with "
                             "`dantes-mlx validate`, then train again with --restart")


def summary(result: "TrainResult") -> str:
    """Human summary of a finished run."""
    parts = [f"backend {result.backend}", f"{result.steps} steps"]
    for label, value, fmt in (("train loss", result.train_loss, ".3f"), ("valid loss", result.val_loss, ".3f"),
                              ("tokens/s", result.tokens_per_sec, ".0f"),
                              ("peak memory GB", result.peak_memory_gb, ".2f")):
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            parts.append(f"{label} {value:{fmt}}")
    lines = [", ".join(parts)] + [f"  {role}: {path}" for role, path in result.files.items()]
    return "\n".join(lines)
