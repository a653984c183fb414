"""Preference tuning through TRL: DPOTrainer (reference: a frozen copy of the starting adapter) or ORPOTrainer, on
the same TRL prompt/chosen/rejected rows as the mlx backend, with its metrics, checkpoints and resume state."""

from __future__ import annotations

import time
from pathlib import Path

from dantes_mlx_unsloth.loop import peak_memory_gb
from dantes_mlx_unsloth.settings import scheduler_name, trl_optimizer
from dantes_mlx_unsloth.trl_path import CHECKPOINTS, last_checkpoint, save_state

from dantes_mlx.train.sdk import PEFT_WEIGHTS, ConfigError, interrupted, pair_row


def trainer_classes(method: str):
    """(Trainer, Config) of TRL for dpo or orpo (ORPO lives in trl.experimental since TRL 1.0)."""
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOTrainer, DPOConfig
    try:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    except ImportError:
        from trl import ORPOConfig, ORPOTrainer
    return ORPOTrainer, ORPOConfig


def preference_config(cfg, config_class, out_dir: Path, iters: int, device: str, has_valid: bool):
    """DPOConfig / ORPOConfig with the settings SFT uses (steps, schedule, optimizer, no clipping) and beta/lambda."""
    import torch

    ga = cfg.grad_accumulation
    optim, weight_decay = trl_optimizer(cfg)
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    updates = max(iters // ga, 1)
    return config_class(
        output_dir=str(out_dir), max_steps=updates, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=ga, learning_rate=cfg.learning_rate,
        lr_scheduler_type=scheduler_name(cfg), warmup_steps=min(cfg.warmup_steps, max(updates - 1, 0)), optim=optim,
        weight_decay=weight_decay, logging_steps=max(cfg.steps_per_report // ga, 1), save_strategy="steps",
        save_steps=max(cfg.save_every // ga, 1), save_total_limit=2, seed=cfg.seed, data_seed=cfg.seed,
        eval_strategy="steps" if has_valid else "no", eval_steps=max(cfg.steps_per_eval // ga, 1),
        max_length=cfg.max_seq_length, beta=cfg.beta if cfg.method == "dpo" else cfg.orpo_lambda,
        report_to="none", bf16=bf16, fp16=device == "cuda" and not bf16, use_cpu=device not in ("cuda", "mps"),
        logging_nan_inf_filter=False, max_grad_norm=0.0, gradient_checkpointing=cfg.grad_checkpoint,
        disable_dropout=True)


def start_adapter(model, folder: Path) -> None:
    """train.resume_adapter: a PEFT adapter's weights in the adapter just added (same rank and targets)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = Path(folder) / PEFT_WEIGHTS
    if not weights.is_file():
        raise ConfigError(f"train.resume_adapter holds no {PEFT_WEIGHTS}: backend 'unsloth' starts only from a "
                          "PEFT adapter", path=folder, fix="give a folder this backend trained, or train this run "
                                                           "with backend 'mlx' (it starts from mlx-lm adapters)")
    result = set_peft_model_state_dict(model, load_file(str(weights)))
    if getattr(result, "unexpected_keys", None):
        raise ConfigError(f"the adapter in {folder} does not fit this run's adapter layers (first unexpected: "
                          f"{result.unexpected_keys[0]})", path="train.resume_adapter",
                          fix="use the rank, num_layers and target_modules recorded in its adapter_config.json")


def metrics_callback(run, iters: int):
    """metrics.jsonl rows like the mlx backend's: train_loss (TRL's loss), val_loss (TRL's eval_loss)."""
    from transformers import TrainerCallback

    ga, metrics = run.cfg.grad_accumulation, run.metrics

    class PreferenceMetrics(TrainerCallback):
        last_train: dict = {}
        last_val: dict = {}

        def __init__(self):
            self.tic, self.logged = time.perf_counter(), 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            step = state.global_step * ga
            if logs and "eval_loss" in logs:
                self.last_val = {"step": step, "val_loss": round(float(logs["eval_loss"]), 5)}
                metrics.append(self.last_val)
            if logs and "loss" in logs:
                elapsed = max(time.perf_counter() - self.tic, 1e-9)
                self.last_train = {"step": step, "train_loss": round(float(logs["loss"]), 5),
                                   "lr": float(logs.get("learning_rate", 0.0)),
                                   "iters_per_sec": round(max(step - self.logged, 1) / elapsed, 3),
                                   "peak_memory_gb": round(peak_memory_gb(run.device), 4)}
                metrics.append(self.last_train)
                self.tic, self.logged = time.perf_counter(), step

        def on_save(self, args, state, control, **kwargs):
            save_state(run, state.global_step, iters)

    return PreferenceMetrics()


def train_preferences(run, model, tokenizer, data, iters: int):
    """Fit with TRL's DPOTrainer or ORPOTrainer; returns the metrics callback (last_train, last_val)."""
    from datasets import Dataset

    cfg, out_dir = run.cfg, run.adapter_dir / CHECKPOINTS
    trainer_class, config_class = trainer_classes(cfg.method)
    resume_from = last_checkpoint(out_dir) if run.resume else None
    if run.resume and resume_from is None:
        raise ConfigError("nothing to resume: no Trainer checkpoint", path=out_dir,
                          fix="run without --resume to start training from scratch")
    if resume_from is not None:
        run.last_saved = int(resume_from.name.split("-")[-1]) * cfg.grad_accumulation
        run.metrics.keep_until(run.last_saved)
    if tokenizer.pad_token is None:  # TRL's preference collators pad; the SFT path pads with EOS too
        tokenizer.pad_token = tokenizer.eos_token
    has_valid = len(data.valid) >= cfg.batch_size
    rows = {name: Dataset.from_list([pair_row(p) for p in pairs]) for name, pairs in
            (("train", data.train), ("valid", data.valid)) if pairs}
    callback = metrics_callback(run, iters)
    trainer = trainer_class(model=model, args=preference_config(cfg, config_class, out_dir, iters, run.device.type,
                                                                has_valid),
                            train_dataset=rows["train"], eval_dataset=rows.get("valid") if has_valid else None,
                            processing_class=tokenizer, callbacks=[callback])
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt:
        update = trainer.state.global_step
        if update * cfg.grad_accumulation > run.last_saved:
            trainer._save_checkpoint(trainer.model, trial=None)
            save_state(run, update, iters)
            run.save_adapter(model)
        raise interrupted(run.last_saved, run.adapter_dir) from None
    if has_valid:
        loss = trainer.evaluate()["eval_loss"]
        callback.last_val = {"step": iters, "val_loss": round(float(loss), 5)}
        run.metrics.append(callback.last_val)
    return callback
