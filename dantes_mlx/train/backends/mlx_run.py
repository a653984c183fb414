"""One mlx training run: model + datasets + optimizer handed to mlx_lm.tuner.trainer.train, with resume."""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import numpy as np

from dantes_mlx.errors import ConfigError, InputError, ModelError
from dantes_mlx.models.config import mlx_model_config
from dantes_mlx.models.hub import resolve_model
from dantes_mlx.models.weights import check_weights
from dantes_mlx.store import read_jsonl
from dantes_mlx.train.backends.base import TrainResult
from dantes_mlx.train.backends.mlx_tuner import (OPTIMIZERS, build_lr_schedule, copy_checkpoint, load_start_adapter,
                                                 make_optimizer, mlx_lm_adapter_config, tqdm_progress)
from dantes_mlx.train.backends.mlx_turns import TurnMaskDataset, iterate_masked_batches, masked_loss
from dantes_mlx.train.data import (assistant_turns, check_answers_fit, check_dropped_system, first_trained,
                                   load_dataset, resolve_iters, validation_note)
from dantes_mlx.train.metrics import MetricsLog, plot_losses
from dantes_mlx.train.state import (clear_run_outputs, interrupted, read_state, write_chat_template,
                                    write_resolved_config, write_state)
from dantes_mlx.workspace import (ADAPTER_CONFIG, METRICS_FILE, MLX_WEIGHTS, OPTIMIZER_FILE, PLOT_FILE,
                                  TRAIN_CONFIG_FILE, checkpoint_name)


class MLXRun:
    """Everything one `train` call needs; `run()` returns the TrainResult."""

    def __init__(self, cfg, data_dir: Path, adapter_dir: Path, resume: bool = False):
        import mlx.core as mx

        assert cfg.optimizer in OPTIMIZERS
        self.cfg, self.data_dir, self.adapter_dir, self.resume = cfg, data_dir, adapter_dir, resume
        world = mx.distributed.init()
        self.rank, self.world_size = world.rank(), world.size()
        self.metrics = MetricsLog(adapter_dir / METRICS_FILE)
        self.start = 0            # global step this run starts after (resume)
        self.last_saved = 0       # global step of the newest complete checkpoint
        self.prior_tokens = 0     # tokens trained before a resume
        self.every_turn = False   # multi-turn rows: a per-token mask trains every assistant turn

    def say(self, message: str) -> None:
        """A progress note on stderr, from rank 0 only."""
        if self.rank == 0:
            print(message, file=sys.stderr)

    # ------------------------------------------------------------ setup
    def load_model(self):
        """The base model (downloaded if needed), quantized in memory when quantize_base asks."""
        from mlx_lm.utils import load, quantize_model

        cfg = self.cfg
        path = resolve_model(cfg.base_model)
        check_weights(path)
        try:
            model, tokenizer, config = load(str(path), return_config=True, model_config=mlx_model_config(path))
        except (ValueError, FileNotFoundError) as exc:
            raise ModelError(f"mlx-lm cannot load this model: {exc}", path=path,
                             fix="use a Hugging Face model folder with safetensors weights that mlx-lm supports") from exc
        quantized = "quantization" in config
        if cfg.quantize_base:
            if quantized:
                raise ConfigError("quantize_base is set but the base is already quantized", path="train.quantize_base",
                                  fix="set quantize_base: 0 (training on a quantized base is already QLoRA)")
            try:
                model, config = quantize_model(model, config, group_size=64, bits=cfg.quantize_base)
            except ValueError as exc:
                raise ConfigError(f"cannot quantize this base to {cfg.quantize_base} bits: {exc}",
                                  path="train.quantize_base", fix="set quantize_base: 0") from exc
            quantized = True
        if quantized and cfg.fine_tune_type == "full":
            raise ConfigError("fine_tune_type=full on a quantized base", path="train.fine_tune_type",
                              fix="use lora or dora (QLoRA), or a non-quantized base for full fine-tuning")
        n_layers = len(model.layers)
        if cfg.num_layers > n_layers:
            raise ConfigError(f"num_layers={cfg.num_layers} but the model has {n_layers} layers",
                              path="train.num_layers", fix=f"use -1 (all) or at most {n_layers}")
        return model, tokenizer, quantized

    def add_adapters(self, model) -> int:
        """Freeze the base and add LoRA/DoRA layers (or unfreeze layers for full); trainable count."""
        import mlx.nn as nn
        from mlx.utils import tree_flatten
        from mlx_lm.tuner.utils import linear_to_lora_layers

        cfg = self.cfg
        model.freeze()
        if cfg.fine_tune_type == "full":
            for layer in model.layers[-max(cfg.num_layers, 0):]:
                layer.unfreeze()
        else:
            params = {"rank": cfg.rank, "scale": cfg.scale, "dropout": cfg.dropout, "keys": list(cfg.target_modules)}
            linear_to_lora_layers(model, cfg.num_layers, params, use_dora=cfg.fine_tune_type == "dora")
        trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
        if trainable == 0:
            keys = sorted(k for k, m in model.layers[0].named_modules()
                          if isinstance(m, (nn.Linear, nn.QuantizedLinear)))
            raise ConfigError(f"target_modules {cfg.target_modules} match no layer of this model",
                              path="train.target_modules", fix=f"choose among: {', '.join(keys)}")
        return trainable

    def datasets(self, tokenizer, data):
        """mlx-lm datasets (ChatDataset / CompletionsDataset / TextDataset) for train and valid; with multi-turn
        chat rows and mask_prompt, TurnMaskDataset (mlx-lm's masking would train only each row's last turn)."""
        mask = self.cfg.mask_prompt and data.format != "text"
        if self.cfg.mask_prompt and not mask:
            self.say("note: text rows have no prompt to mask; training on every token")
        if data.format == "chat":
            check_dropped_system(tokenizer, data.train[0]["messages"], mask, self.data_dir / "train.jsonl", self.say)
        self.every_turn = mask and data.format == "chat" and any(
            assistant_turns(row["messages"]) > 1 for row in data.train + data.valid)
        if self.every_turn:
            self.say("note: multi-turn rows: the loss covers every assistant turn (not only the last)")
        note = validation_note(self.data_dir, len(data.valid), self.cfg.batch_size)
        if note:  # mlx-lm's trainer skips validation when it has no dataset
            self.say(note)
        train = self.dataset(data.train, tokenizer, mask)
        valid = None if note else self.dataset(data.valid, tokenizer, mask)
        for name, dataset in (("train", train), ("valid", valid)):
            if dataset is not None:
                items = self.encode_all(dataset, self.data_dir / f"{name}.jsonl")
                if mask:  # rows per process: each one masks and truncates its own batch
                    offsets = [(len(ids), first_trained(m) if self.every_turn else m) for ids, m in items]
                    check_answers_fit(offsets, self.cfg.max_seq_length, self.cfg.batch_size // self.world_size,
                                      self.data_dir / f"{name}.jsonl", self.say)
        return train, valid, mask

    def dataset(self, rows: list[dict], tokenizer, mask: bool):
        """One split as mlx-lm's cached dataset: its own, or TurnMaskDataset for multi-turn rows."""
        from mlx_lm.tuner.datasets import CacheDataset, create_dataset

        if self.every_turn:
            return CacheDataset(TurnMaskDataset(rows, tokenizer))
        return CacheDataset(create_dataset(rows, tokenizer, types.SimpleNamespace(mask_prompt=mask)))

    def encode_all(self, dataset, path: Path) -> list:
        """Every row through the chat template now (mlx-lm's cache keeps them for training): a row the template
        cannot format (tool roles a template lacks...) is an error naming its line, not a traceback mid-run."""
        items = []
        for i in range(len(dataset)):
            try:
                items.append(dataset[i])
            except Exception as exc:  # jinja2's TemplateError, a KeyError in a template...
                line = [n for n, _ in read_jsonl(path)][i]
                raise InputError(f"the base model's chat template cannot format this row ({type(exc).__name__}: "
                                 f"{str(exc)[:300]})", path=path, line=line,
                                 fix="check the row's roles against the template (tool rows need a template "
                                     "with tool support), or fix the row") from None
        return items

    def optimizer(self, updates: int):
        """The optimizer with mlx-lm's schedule; on resume its saved state (moments and step count)."""
        import mlx.core as mx
        from mlx.utils import tree_unflatten

        opt = make_optimizer(self.cfg.optimizer, build_lr_schedule(self.cfg, updates))
        saved = self.adapter_dir / OPTIMIZER_FILE
        if self.start and saved.is_file():
            opt.state = tree_unflatten(list(mx.load(str(saved)).items()))
        elif self.start:  # state lost: at least keep the schedule where it was
            opt.state["step"] = mx.array(self.start // self.cfg.grad_accumulation, mx.uint64)
        return opt

    # ------------------------------------------------------------ hooks into mlx-lm's trainer
    def iterate_batches(self):
        """The batch maker the trainer draws from: mlx-lm's, with per-token masks for multi-turn rows (preference
        runs make pairs)."""
        from mlx_lm.tuner.trainer import iterate_batches

        return iterate_masked_batches if self.every_turn else iterate_batches

    def loss(self):
        """The loss the trainer minimises: mlx-lm's cross-entropy on the unmasked tokens (every assistant turn's
        for multi-turn rows)."""
        from mlx_lm.tuner.trainer import default_loss

        return masked_loss if self.every_turn else default_loss

    def load_data(self):
        """The rows this run trains on."""
        return load_dataset(self.data_dir)

    def start_from(self, model, tokenizer, train_set, valid_set) -> None:
        """Before a fresh run's first step: the weights of train.resume_adapter, when set."""
        if self.cfg.resume_adapter:
            load_start_adapter(model, Path(self.cfg.resume_adapter))

    def batch_iterator(self, optimizer, iters: int):
        """The batch maker, plus: skip batches already trained (resume), keep evaluation from
        moving the shuffle's random state, and record each checkpoint the trainer writes."""
        iterate_batches = self.iterate_batches()
        run = self

        def iterate(dataset, batch_size, max_seq_length, loop=False, seed=None, comm_group=None):
            inner = iterate_batches(dataset=dataset, batch_size=batch_size, max_seq_length=max_seq_length,
                                    loop=loop, seed=seed, comm_group=comm_group)
            if not loop:  # evaluation: leave the training shuffle's random state untouched
                saved = np.random.get_state()
                try:
                    yield from inner
                finally:
                    np.random.set_state(saved)
                return
            for _ in range(run.start):
                next(inner)
            for local, batch in enumerate(inner):
                if local:
                    run.step_done(local, optimizer, iters)
                yield batch

        return iterate

    def step_done(self, local: int, optimizer, iters: int) -> None:
        """Called once step `local` of this run (mlx-lm's `it`) is complete, its checkpoint included."""
        if local % self.cfg.save_every:
            return
        step = self.start + local
        if self.rank == 0:
            produced = self.adapter_dir / checkpoint_name(local)
            if local != step and produced.is_file():
                produced.replace(self.adapter_dir / checkpoint_name(step))
            self.save_state(optimizer, step, iters)
        self.last_saved = step

    def save_state(self, optimizer, step: int, iters: int) -> None:
        """Optimizer state, then the state file naming the checkpoint (the resume point)."""
        import mlx.core as mx
        from mlx.utils import tree_flatten

        tmp = self.adapter_dir / "optimizer.tmp.safetensors"
        mx.save_safetensors(str(tmp), dict(tree_flatten(optimizer.state)))
        tmp.replace(self.adapter_dir / OPTIMIZER_FILE)
        write_state(self.adapter_dir, self.cfg, step, iters, checkpoint_name(step))

    def save_interrupted(self, model, optimizer, iters: int) -> int:
        """Ctrl-C: save adapter, optimizer and state at the last optimizer update (weights, moments and data
        position agree there; a partly accumulated gradient is dropped). Returns the resume step."""
        import mlx.core as mx
        from mlx.utils import tree_flatten

        step = int(optimizer.state["step"].item()) * self.cfg.grad_accumulation
        if self.rank != 0 or step <= self.last_saved:
            return self.last_saved
        weights = dict(tree_flatten(model.trainable_parameters()))
        tmp = self.adapter_dir / "adapters.tmp.safetensors"
        mx.save_safetensors(str(tmp), weights)
        copy_checkpoint(tmp, self.adapter_dir / checkpoint_name(step))
        tmp.replace(self.adapter_dir / MLX_WEIGHTS)
        self.save_state(optimizer, step, iters)
        self.last_saved = step
        return step

    def callback(self):
        """mlx-lm TrainingCallback writing metrics.jsonl with global step numbers."""
        from mlx_lm.tuner.callbacks import TrainingCallback

        run = self

        class MetricsCallback(TrainingCallback):
            last_train: dict = {}
            last_val: dict = {}

            def on_train_loss_report(self, info):
                row = {"step": run.start + info["iteration"], "train_loss": round(info["train_loss"], 5),
                       "lr": float(info["learning_rate"]), "tokens_per_sec": round(info["tokens_per_second"], 1),
                       "iters_per_sec": round(info["iterations_per_second"], 3),
                       "trained_tokens": int(run.prior_tokens + info["trained_tokens"]),
                       "peak_memory_gb": round(info["peak_memory"], 4)}
                self.last_train = row
                if run.rank == 0:
                    run.metrics.append(row)

            def on_val_loss_report(self, info):
                row = {"step": run.start + info["iteration"], "val_loss": round(info["val_loss"], 5),
                       "val_time": round(info["val_time"], 3)}
                self.last_val = row
                if run.rank == 0:
                    run.metrics.append(row)

        return MetricsCallback()

    # ------------------------------------------------------------ the run
    def begin(self, iters: int) -> dict | None:
        """Resume state (or a clean folder for a fresh run)."""
        if not self.resume:
            if self.rank == 0:
                clear_run_outputs(self.adapter_dir)
            return None
        state = read_state(self.adapter_dir, self.cfg)
        self.start = self.last_saved = int(state["step"])
        if self.rank == 0:
            self.metrics.keep_until(self.start)
        self.prior_tokens = self.metrics.last("trained_tokens") or 0
        self.say(f"Resuming from step {self.start} ({state['checkpoint']}); training to step {iters}")
        return state

    def run(self) -> TrainResult:
        import mlx.core as mx
        from mlx_lm.tuner import trainer

        cfg, adapter_dir, tic = self.cfg, self.adapter_dir, time.perf_counter()
        data = self.load_data()
        iters = resolve_iters(cfg, len(data.train))
        state = self.begin(iters)
        if state and self.start >= iters:
            self.say(f"Already trained to step {self.start} (>= {iters}); raise iters or epochs to train more")
            return self.result(iters, tic, {}, {})
        model, tokenizer, quantized = self.load_model()
        mx.random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        trainable = self.add_adapters(model)
        train_set, valid_set, mask = self.datasets(tokenizer, data)
        self.start_from(model, tokenizer, train_set, valid_set)
        if state:
            model.load_weights(str(adapter_dir / state["checkpoint"]), strict=False)
        optimizer = self.optimizer(max(iters // cfg.grad_accumulation, 1))
        if self.rank == 0:
            self.write_config(tokenizer, iters, trainable, quantized, mask, data.format)
        args = trainer.TrainingArgs(
            batch_size=cfg.batch_size, iters=iters - self.start, val_batches=cfg.val_batches,
            steps_per_report=cfg.steps_per_report, steps_per_eval=cfg.steps_per_eval,
            steps_per_save=cfg.save_every, max_seq_length=cfg.max_seq_length,
            adapter_file=str(adapter_dir / MLX_WEIGHTS), grad_checkpoint=cfg.grad_checkpoint,
            grad_accumulation_steps=cfg.grad_accumulation)
        callback = self.callback()
        # mlx-lm's grad_checkpoint patches the block class itself; undo it so later models are untouched.
        block, block_call = type(model.layers[0]), type(model.layers[0]).__call__
        try:
            with tqdm_progress(self.start):
                trainer.train(model=model, optimizer=optimizer, train_dataset=train_set, val_dataset=valid_set,
                              args=args, loss=self.loss(), iterate_batches=self.batch_iterator(optimizer, iters),
                              training_callback=callback)
        except KeyboardInterrupt:
            raise interrupted(self.save_interrupted(model, optimizer, iters), adapter_dir) from None
        finally:
            block.__call__ = block_call
        if self.rank == 0:
            final = adapter_dir / checkpoint_name(iters)
            if not final.is_file():
                copy_checkpoint(adapter_dir / MLX_WEIGHTS, final)
            self.save_state(optimizer, iters, iters)
        return self.result(iters, tic, callback.last_train, callback.last_val)

    def write_config(self, tokenizer, iters, trainable, quantized, mask, fmt) -> None:
        """adapter_config.json (mlx-lm's), train_config.yaml (ours, resolved) and the chat template."""
        from mlx_lm.utils import save_config

        save_config(mlx_lm_adapter_config(self.cfg, self.data_dir, iters, self.cfg.base_model),
                    self.adapter_dir / ADAPTER_CONFIG)
        write_resolved_config(self.cfg, self.adapter_dir, backend="mlx", iters=iters, data=str(self.data_dir),
                              data_format=fmt, mask_prompt=mask, every_assistant_turn=self.every_turn,
                              qlora=quantized, trainable_parameters=trainable,
                              resumed_from=self.start)
        write_chat_template(getattr(tokenizer, "chat_template", None), self.adapter_dir)

    def result(self, iters, tic, last_train: dict, last_val: dict) -> TrainResult:
        """TrainResult (rank 0 also renders the loss plot)."""
        files = {"adapters": self.adapter_dir / MLX_WEIGHTS,
                 "adapter_config": self.adapter_dir / ADAPTER_CONFIG,
                 "config": self.adapter_dir / TRAIN_CONFIG_FILE, "metrics": self.metrics.path}
        if self.rank == 0 and self.metrics.path.is_file():
            files["plot"] = plot_losses(self.metrics.path, self.adapter_dir / PLOT_FILE,
                                        title=f"{self.cfg.fine_tune_type} on {Path(self.cfg.base_model).name}")
        return TrainResult(
            backend="mlx", adapter_dir=self.adapter_dir, steps=iters,
            train_loss=last_train.get("train_loss", self.metrics.last("train_loss")),
            val_loss=last_val.get("val_loss", self.metrics.last("val_loss")),
            tokens_per_sec=last_train.get("tokens_per_sec"), peak_memory_gb=last_train.get("peak_memory_gb"),
            seconds=round(time.perf_counter() - tic, 2), files=files)

