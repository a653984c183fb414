"""The training-backend SDK: everything a backend plugin may import from dantes_mlx, and nothing else.

A plugin registers a class in the `dantes_mlx.backends` entry-point group (see `TrainBackend`); `dantes-mlx train`
calls its `train(cfg, data_dir, adapter_dir, resume)` with the settings already merged and the adapter folder
checked and locked. The names below keep a plugin's adapter folder the one `export`, `eval` and `chat` read.

Settings and errors
    TrainConfig: the `train:` settings a backend receives (help text on each field).
    TrainBackend: the protocol a backend class implements (name, available, device, check, train).
    TrainResult: what `train` returns (backend, adapter folder, steps, last losses, speed, files).
    ConfigError: a setting this backend cannot honour; name the setting and the fix.
    ModelError: a base model that cannot be found, downloaded or loaded.
    InputError: a bad dataset row or file, with its file and line.
    interrupted: the error to raise after Ctrl-C, saying whether --resume can continue.
Dataset
    load_dataset: train.jsonl and valid.jsonl rows, all in one mlx-lm format.
    resolve_iters: the step count from iters or epochs, checked against the rows and batch size.
    validation_note: why a run has no validation loss, or None.
    check_dropped_system: refuse a chat template that would mask the answer (Mistral v0.3 and the persona).
    check_answers_fit: refuse (or warn about) rows whose prompt leaves no answer token within max_seq_length.
    assistant_turns: how many assistant turns a chat row holds (more than one: mask every turn, not the last).
    assistant_token_mask: a chat row's token ids and a 0/1 loss mask on every assistant turn.
    first_trained: the first token a mask trains (the offset check_answers_fit reads).
    load_preferences: train.jsonl and valid.jsonl preference rows (train.method dpo/orpo) as PreferencePairs.
    PreferencePair: one prompt (chat messages) with its chosen and rejected answers.
    pair_row: a PreferencePair as TRL's conversational prompt/chosen/rejected row.
Models
    resolve_model: a base model's local folder (a folder, or a Hugging Face download).
Metrics
    MetricsLog: metrics.jsonl, the strict-JSON log of train and validation reports.
    plot_losses: loss.png from metrics.jsonl.
State (the adapter folder)
    METRICS_FILE, PLOT_FILE, STATE_FILE, PEFT_WEIGHTS, ADAPTER_CONFIG: the folder's file names.
    checkpoint_name: the numbered checkpoint file of a step.
    clear_run_outputs: remove what a previous run left, before a fresh one.
    read_state: the state a --resume continues from (refused when shape settings changed).
    write_state: record the last complete checkpoint (after the checkpoint file itself).
    write_resolved_config: train_config.yaml, every setting the run used and what it derived (its backend).
    write_chat_template: the tokenizer's chat template beside the adapter.
"""

from __future__ import annotations

from dantes_mlx.config import TrainConfig
from dantes_mlx.errors import ConfigError, InputError, ModelError
from dantes_mlx.models.hub import resolve_model
from dantes_mlx.train.backends.base import TrainBackend, TrainResult
from dantes_mlx.train.data import (assistant_token_mask, assistant_turns, check_answers_fit, check_dropped_system,
                                  first_trained, load_dataset, resolve_iters, validation_note)
from dantes_mlx.train.metrics import MetricsLog, plot_losses
from dantes_mlx.train.preferences import PreferencePair, load_preferences, pair_row
from dantes_mlx.train.state import (clear_run_outputs, interrupted, read_state, write_chat_template,
                                    write_resolved_config, write_state)
from dantes_mlx.workspace import ADAPTER_CONFIG, METRICS_FILE, PEFT_WEIGHTS, PLOT_FILE, STATE_FILE, checkpoint_name

__all__ = [
    "TrainConfig", "TrainBackend", "TrainResult", "ConfigError", "ModelError", "InputError", "interrupted",
    "load_dataset", "resolve_iters", "validation_note", "check_dropped_system", "check_answers_fit",
    "assistant_turns", "assistant_token_mask", "first_trained",
    "load_preferences", "PreferencePair", "pair_row",
    "resolve_model", "MetricsLog", "plot_losses",
    "METRICS_FILE", "PLOT_FILE", "STATE_FILE", "PEFT_WEIGHTS", "ADAPTER_CONFIG", "checkpoint_name",
    "clear_run_outputs", "read_state", "write_state", "write_resolved_config", "write_chat_template",
]
