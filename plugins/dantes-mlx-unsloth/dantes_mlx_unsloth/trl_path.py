"""Training through TRL's SFTTrainer (Unsloth's patched one on CUDA): same batches, masks, metrics."""

from __future__ import annotations

import time
from pathlib import Path

from dantes_mlx_unsloth.data import Collator, Example, as_hf_dataset
from dantes_mlx_unsloth.loop import evaluate, peak_memory_gb
from dantes_mlx_unsloth.settings import scheduler_name, trl_optimizer

from dantes_mlx.train.sdk import ConfigError, interrupted, write_state

CHECKPOINTS = "checkpoints"  # the Trainer's own checkpoint-N folders, inside adapters/


def sft_config(cfg, out_dir: Path, iters: int, device: str, unsloth: bool):
    """SFTConfig for cfg: update steps = micro-batches / grad_accumulation, our collator, no TRL preparation."""
    import torch
    from trl import SFTConfig

    ga = cfg.grad_accumulation
    optim, weight_decay = trl_optimizer(cfg)
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    return SFTConfig(
        output_dir=str(out_dir), max_steps=max(iters // ga, 1), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=ga, learning_rate=cfg.learning_rate, lr_scheduler_type=scheduler_name(cfg),
        warmup_steps=min(cfg.warmup_steps, max(iters // ga - 1, 0)), optim=optim, weight_decay=weight_decay,
        logging_steps=max(cfg.steps_per_report // ga, 1), save_strategy="steps",
        save_steps=max(cfg.save_every // ga, 1), save_total_limit=2, eval_strategy="no", seed=cfg.seed,
        data_seed=cfg.seed, max_length=cfg.max_seq_length, packing=False, remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True}, dataloader_drop_last=True, report_to="none",
        bf16=bf16, fp16=device == "cuda" and not bf16, use_cpu=device not in ("cuda", "mps"),
        # Log a NaN loss as NaN (the Trainer's default hides it behind the window's mean), so it is seen as diverged.
        logging_nan_inf_filter=False,
        max_grad_norm=0.0,  # mlx-lm (and the built-in loop) clip no gradient; the Trainer's default clips to 1.0
        # Explicit: TRL's default is True. Unsloth checkpoints through get_peft_model(use_gradient_checkpointing=...).
        gradient_checkpointing=cfg.grad_checkpoint and not unsloth)


def checkpoint_file(update: int) -> str:
    """The adapter inside the Trainer's checkpoint after `update` optimizer steps, relative to adapters/."""
    return f"{CHECKPOINTS}/checkpoint-{update}/adapter_model.safetensors"


def save_state(run, update: int, iters: int) -> None:
    """train_state.json naming the Trainer's newest checkpoint (what --resume and --restart look at)."""
    ga = run.cfg.grad_accumulation
    step = iters if update >= max(iters // ga, 1) else update * ga
    write_state(run.adapter_dir, run.cfg, step, iters, checkpoint_file(update))
    run.last_saved = step


def metrics_callback(run, collator: Collator, valid: list[Example], iters: int, prior_tokens: int):
    """A TrainerCallback writing metrics.jsonl rows like the mlx backend's (steps in micro-batches)."""
    from transformers import TrainerCallback

    cfg, metrics, device = run.cfg, run.metrics, run.device
    ga = cfg.grad_accumulation

    class MetricsCallback(TrainerCallback):
        last_train: dict = {}
        last_val: dict = {}

        def __init__(self):
            self.tic, self.tokens, self.window_tokens, self.logged_step = time.perf_counter(), 0, 0, 0

        def count(self, module, args, kwargs):
            """Forward pre-hook: trained tokens of each training forward (exact, unlike counting what the
            data loader prefetches; validation runs in eval mode and is not counted)."""
            labels = kwargs.get("labels")
            if module.training and labels is not None:
                n = int((labels[:, 1:] != -100).sum())
                self.tokens, self.window_tokens = self.tokens + n, self.window_tokens + n

        def validate(self, model, step: int) -> None:
            if len(valid) < cfg.batch_size:
                return
            tic = time.perf_counter()
            loss = evaluate(model, valid, collator, cfg.batch_size, cfg.val_batches, model.device)
            self.last_val = {"step": step, "val_loss": round(loss, 5),
                             "val_time": round(time.perf_counter() - tic, 3)}
            metrics.append(self.last_val)
            self.tic += time.perf_counter() - tic  # validation time is not training throughput

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            model.register_forward_pre_hook(self.count, with_kwargs=True)
            self.logged_step = state.global_step * ga
            self.validate(model, self.logged_step + 1)
            self.tic = time.perf_counter()

        def on_step_end(self, args, state, control, model=None, **kwargs):
            step = state.global_step * ga
            if step % cfg.steps_per_eval == 0 and step < iters:
                self.validate(model, step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            step = state.global_step * ga
            elapsed = max(time.perf_counter() - self.tic, 1e-9)
            window = max(state.global_step * ga - self.logged_step, 1)
            self.last_train = {
                "step": step, "train_loss": round(float(logs["loss"]), 5),
                "lr": float(logs.get("learning_rate", 0.0)),
                "tokens_per_sec": round(self.window_tokens / elapsed, 1),
                "iters_per_sec": round(window / elapsed, 3), "trained_tokens": int(prior_tokens + self.tokens),
                "peak_memory_gb": round(peak_memory_gb(device), 4)}
            metrics.append(self.last_train)
            self.tic, self.window_tokens, self.logged_step = time.perf_counter(), 0, step

        def on_save(self, args, state, control, **kwargs):
            save_state(run, state.global_step, iters)  # the checkpoint-N folder is complete: the resume point

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self.validate(model, state.global_step * ga)

    return MetricsCallback()


def last_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint-N folder the Trainer saved, if any."""
    found = sorted(Path(out_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return found[-1] if found else None


def train_with_trl(run, model, tokenizer, train: list[Example], valid: list[Example], collator: Collator,
                   iters: int, unsloth: bool):
    """Fit with SFTTrainer; returns the metrics callback (last_train, last_val). `run` is the TorchRun."""
    if unsloth:
        from unsloth import is_bfloat16_supported  # noqa: F401  (patches TRL before it is imported)
    from trl import SFTTrainer

    cfg, out_dir = run.cfg, run.adapter_dir / CHECKPOINTS
    resume_from = None
    if run.resume:
        resume_from = last_checkpoint(out_dir)
        if resume_from is None:
            raise ConfigError("nothing to resume: no Trainer checkpoint", path=out_dir,
                              fix="run without --resume to start training from scratch")
        run.metrics.keep_until(int(resume_from.name.split("-")[-1]) * cfg.grad_accumulation)
        run.last_saved = int(resume_from.name.split("-")[-1]) * cfg.grad_accumulation
    prior = 0 if resume_from is None else int(run.metrics.last("trained_tokens") or 0)
    callback = metrics_callback(run, collator, valid, iters, prior)
    trainer = SFTTrainer(model=model, args=sft_config(cfg, out_dir, iters, run.device.type, unsloth),
                         train_dataset=as_hf_dataset(train), data_collator=collator, processing_class=tokenizer,
                         callbacks=[callback])
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt:
        update = trainer.state.global_step  # weights, optimizer and data position agree at an update
        if update * cfg.grad_accumulation > run.last_saved:
            trainer._save_checkpoint(trainer.model, trial=None)  # what the Trainer writes at save_steps
            save_state(run, update, iters)
            run.save_adapter(model)
        raise interrupted(run.last_saved, run.adapter_dir) from None
    return callback
