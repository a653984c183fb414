"""One training run of the unsloth backend: pick the path, load model + PEFT, train, write adapters/."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

from dantes_mlx_unsloth.data import Collator, encode_rows, multi_turn, warn_if_truncated
from dantes_mlx_unsloth.loop import OPTIMIZER_STATE, TorchLoop, load_optimizer, save_optimizer
from dantes_mlx_unsloth.prefs import start_adapter, train_preferences
from dantes_mlx_unsloth.settings import BACKEND, is_bnb_quantized, lora_kwargs, read_model_config

from dantes_mlx.train.sdk import (ADAPTER_CONFIG, METRICS_FILE, PEFT_WEIGHTS, PLOT_FILE, STATE_FILE, ConfigError,
                                  MetricsLog, ModelError, TrainResult, check_answers_fit, check_dropped_system,
                                  checkpoint_name, clear_run_outputs, interrupted, load_dataset, load_preferences,
                                  plot_losses, read_state, resolve_iters, resolve_model, validation_note,
                                  write_chat_template, write_resolved_config, write_state)

PATH_ENV = "DANTES_UNSLOTH_PATH"  # force a path: unsloth, trl or loop
PATHS = {"unsloth": "Unsloth FastLanguageModel + TRL SFTTrainer (DPOTrainer, ORPOTrainer)",
         "trl": "transformers + peft + TRL SFTTrainer (DPOTrainer, ORPOTrainer)",
         "loop": "transformers + peft + the built-in torch loop"}


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def torch_device():
    """Where torch trains: CUDA, else Apple's MPS, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def choose_path(device) -> str:
    """unsloth when importable on CUDA, else TRL when installed, else the built-in loop (or $DANTES_UNSLOTH_PATH)."""
    forced = os.environ.get(PATH_ENV, "").strip()
    if forced:
        if forced not in PATHS:
            raise ConfigError(f"{PATH_ENV}={forced!r} is not a training path", path=PATH_ENV,
                              fix=f"use one of {', '.join(PATHS)} or unset it")
        if forced == "unsloth" and not (device.type == "cuda" and has("unsloth")):
            raise ConfigError("the unsloth path needs `pip install unsloth` and a CUDA GPU", path=PATH_ENV,
                              fix="unset it to let the backend pick the path")
        if forced == "trl" and not has("trl"):
            raise ConfigError("the trl path needs `pip install trl`", path=PATH_ENV, fix="pip install trl")
        return forced
    if device.type == "cuda" and has("unsloth"):
        return "unsloth"
    return "trl" if has("trl") else "loop"


class TorchRun:
    """Everything one `train` call of the unsloth backend needs; `run()` returns the TrainResult."""

    def __init__(self, cfg, data_dir: Path, adapter_dir: Path, resume: bool = False):
        self.cfg, self.data_dir, self.adapter_dir, self.resume = cfg, Path(data_dir), Path(adapter_dir), resume
        self.metrics = MetricsLog(self.adapter_dir / METRICS_FILE)
        self.device = torch_device()
        self.path = choose_path(self.device)
        self.last_saved = 0  # step of the newest resumable checkpoint

    def say(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    # ------------------------------------------------------------ model
    def load(self, model_dir: Path, n_layers: int):
        """Base model + tokenizer with LoRA/DoRA layers added (Unsloth's or PEFT's)."""
        import torch

        torch.manual_seed(self.cfg.seed)
        if self.path == "unsloth":
            return self.load_unsloth(model_dir, n_layers)
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        kwargs = {"dtype": self.dtype()}
        if self.cfg.quantize_base:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=self.cfg.quantize_base == 4, load_in_8bit=self.cfg.quantize_base == 8,
                bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=self.dtype())
            kwargs["device_map"] = {"": 0}
        try:
            model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelError(f"transformers cannot load this model: {exc}", path=model_dir,
                             fix="use a Hugging Face model folder or repo with safetensors weights") from exc
        if self.cfg.quantize_base:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=self.cfg.grad_checkpoint)
        else:
            model = model.to(self.device)
        if self.cfg.grad_checkpoint:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        return get_peft_model(model, LoraConfig(**lora_kwargs(self.cfg, n_layers))), tokenizer

    def load_unsloth(self, model_dir: Path, n_layers: int):
        """FastLanguageModel (4-bit when asked or when the checkpoint is bnb-4bit) + its get_peft_model."""
        from unsloth import FastLanguageModel

        config = read_model_config(model_dir)
        four_bit = self.cfg.quantize_base == 4 or is_bnb_quantized(config)
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=str(model_dir), max_seq_length=self.cfg.max_seq_length, dtype=None,
            load_in_4bit=four_bit, load_in_8bit=self.cfg.quantize_base == 8, random_state=self.cfg.seed)
        kwargs = lora_kwargs(self.cfg, n_layers)
        kwargs.pop("task_type")
        model = FastLanguageModel.get_peft_model(
            model, **kwargs, random_state=self.cfg.seed, max_seq_length=self.cfg.max_seq_length,
            use_gradient_checkpointing="unsloth" if self.cfg.grad_checkpoint else False)
        return model, tokenizer

    def dtype(self):
        """fp32 on CPU (exact, and what parity compares); bf16 (else fp16) on a GPU."""
        import torch

        if self.device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32

    # ------------------------------------------------------------ run
    def begin(self, iters: int) -> dict | None:
        """A clean folder for a fresh run, or the loop's resume state."""
        if not self.resume:
            clear_run_outputs(self.adapter_dir)
            for name in (OPTIMIZER_STATE, "adapters.safetensors", PEFT_WEIGHTS):  # no stale weights of either format
                (self.adapter_dir / name).unlink(missing_ok=True)
            shutil.rmtree(self.adapter_dir / "checkpoints", ignore_errors=True)
            return None
        if self.path != "loop":  # the Trainer resumes from its own checkpoint-N folder
            if (self.adapter_dir / STATE_FILE).is_file():
                read_state(self.adapter_dir, self.cfg)  # refuses changed shape settings
            return None
        state = read_state(self.adapter_dir, self.cfg)
        self.metrics.keep_until(int(state["step"]))
        return state

    def run(self) -> TrainResult:
        import torch

        cfg, tic = self.cfg, time.perf_counter()
        self.say(f"backend {BACKEND}: {PATHS[self.path]} on {self.device.type} (torch {torch.__version__})")
        if cfg.method != "sft":
            return self.run_preferences(tic)
        data = load_dataset(self.data_dir)
        iters = resolve_iters(cfg, len(data.train))
        state = self.begin(iters)
        start = int(state["step"]) if state else 0
        if start >= iters:
            self.say(f"Already trained to step {start} (>= {iters}); raise iters or epochs to train more")
            return self.result(iters, tic, {}, {})
        model_dir = resolve_model(cfg.base_model)
        n_layers = int(read_model_config(model_dir)["num_hidden_layers"])
        model, tokenizer = self.load(model_dir, n_layers)
        if cfg.resume_adapter:  # a --resume then loads its checkpoint over it
            start_adapter(model, Path(cfg.resume_adapter))
        mask = cfg.mask_prompt and data.format != "text"
        if cfg.mask_prompt and not mask:
            self.say("note: text rows have no prompt to mask; training on every token")
        if data.format == "chat":
            check_dropped_system(tokenizer, data.train[0]["messages"], mask, self.data_dir / "train.jsonl", self.say)
        every_turn = mask and multi_turn(data.train + data.valid, data.format)
        if every_turn:
            self.say("note: multi-turn rows: the loss covers every assistant turn (not only the last)")
        train, valid = (encode_rows(rows, data.format, tokenizer, mask, every_turn) for rows in (data.train, data.valid))
        if mask:
            for name, examples in (("train", train), ("valid", valid)):
                check_answers_fit([(len(e.ids), e.offset) for e in examples], cfg.max_seq_length, cfg.batch_size,
                                  self.data_dir / f"{name}.jsonl", self.say)
        warn_if_truncated(train, cfg.max_seq_length, "train")
        note = validation_note(self.data_dir, len(valid), cfg.batch_size)
        if note:  # the loops skip validation below a batch
            self.say(note)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        collator = Collator(pad if pad is not None else 0, cfg.max_seq_length)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.write_config(tokenizer, iters, trainable, mask, data.format, start, every_turn)
        if self.path == "loop":
            done = self.train_loop(model, train, valid, collator, iters, state)
        else:
            from dantes_mlx_unsloth.trl_path import train_with_trl

            done = train_with_trl(self, model, tokenizer, train, valid, collator, iters, self.path == "unsloth")
        self.save_adapter(model)
        return self.result(iters, tic, done.last_train, done.last_val)

    def run_preferences(self, tic: float) -> TrainResult:
        """dpo or orpo through TRL's trainers, on TRL prompt/chosen/rejected rows; the same adapter folder out."""
        cfg = self.cfg
        if self.path == "loop":
            raise ConfigError(f"method={cfg.method!r} needs TRL's trainers, not the built-in loop", path="train.method",
                              fix="pip install trl (and unset $DANTES_UNSLOTH_PATH=loop), or use method: sft")
        data = load_preferences(self.data_dir)
        iters = resolve_iters(cfg, len(data.train))
        self.begin(iters)
        model_dir = resolve_model(cfg.base_model)
        model, tokenizer = self.load(model_dir, int(read_model_config(model_dir)["num_hidden_layers"]))
        if cfg.resume_adapter:  # a --resume then loads its checkpoint over it
            start_adapter(model, Path(cfg.resume_adapter))
        if self.path == "unsloth":
            from unsloth import PatchDPOTrainer

            PatchDPOTrainer()
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.write_config(tokenizer, iters, trainable, True, data.format, 0)
        done = train_preferences(self, model, tokenizer, data, iters)
        self.save_adapter(model)
        return self.result(iters, tic, done.last_train, done.last_val)

    def train_loop(self, model, train, valid, collator, iters: int, state: dict | None) -> TorchLoop:
        """The built-in loop, with mlx-style numbered checkpoints and --resume."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        loop = TorchLoop(model, self.cfg, train, valid, collator, self.metrics, self.device,
                         checkpoint=lambda step, opt, sched: self.checkpoint(model, step, iters, opt, sched))
        optimizer, scheduler = loop.build(iters)
        start, prior = 0, 0
        if state:
            start = int(state["step"])
            set_peft_model_state_dict(model, load_file(str(self.adapter_dir / state["checkpoint"])))
            if not load_optimizer(self.adapter_dir / OPTIMIZER_STATE, optimizer, scheduler):
                self.say("warning: optimizer state missing; Adam's moments restart from zero")
            prior = int(self.metrics.last("trained_tokens") or 0)
            self.say(f"Resuming from step {start} ({state['checkpoint']}); training to step {iters}")
        self.last_saved = start
        try:
            loop.run(iters, optimizer, scheduler, start=start, prior_tokens=prior)
        except KeyboardInterrupt:
            if loop.updated > self.last_saved:  # weights, moments and data position agree at an update
                self.checkpoint(model, loop.updated, iters, optimizer, scheduler)
                self.save_adapter(model)
            raise interrupted(self.last_saved, self.adapter_dir) from None
        return loop

    def checkpoint(self, model, step: int, iters: int, optimizer, scheduler) -> None:
        """Adapter weights as a numbered checkpoint, then optimizer state, then the state file (resume point)."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        path = self.adapter_dir / checkpoint_name(step)
        tmp = path.with_name(path.name + ".tmp")
        weights = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(model).items()}
        save_file(weights, str(tmp), metadata={"format": "pt"})
        tmp.replace(path)
        save_optimizer(self.adapter_dir / OPTIMIZER_STATE, optimizer, scheduler)
        write_state(self.adapter_dir, self.cfg, step, iters, path.name)
        self.last_saved = step

    def save_adapter(self, model) -> None:
        """adapter_model.safetensors + adapter_config.json (PEFT's format), swapped in whole."""
        tmp = self.adapter_dir / ".peft.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.peft_config["default"].base_model_name_or_path = self.cfg.base_model
        model.save_pretrained(str(tmp), safe_serialization=True)
        for name in (PEFT_WEIGHTS, ADAPTER_CONFIG):
            os.replace(tmp / name, self.adapter_dir / name)
        shutil.rmtree(tmp, ignore_errors=True)  # PEFT's generated model card is not ours to ship

    def write_config(self, tokenizer, iters, trainable, mask, fmt, start, every_turn=False) -> None:
        """train_config.yaml (resolved settings + what this backend derived) and the chat template."""
        import torch

        write_resolved_config(self.cfg, self.adapter_dir, backend=BACKEND, path=self.path,
                              path_description=PATHS[self.path], device=self.device.type,
                              torch=str(torch.__version__), iters=iters, data=str(self.data_dir), data_format=fmt,
                              mask_prompt=mask, every_assistant_turn=every_turn, qlora=bool(self.cfg.quantize_base),
                              trainable_parameters=trainable, resumed_from=start)
        write_chat_template(getattr(tokenizer, "chat_template", None), self.adapter_dir)

    def result(self, iters: int, tic: float, last_train: dict, last_val: dict) -> TrainResult:
        files = {"adapters": self.adapter_dir / PEFT_WEIGHTS, "adapter_config": self.adapter_dir / ADAPTER_CONFIG,
                 "config": self.adapter_dir / "train_config.yaml", "metrics": self.metrics.path}
        if self.metrics.path.is_file():
            files["plot"] = plot_losses(self.metrics.path, self.adapter_dir / PLOT_FILE,
                                        title=f"{self.cfg.fine_tune_type} on {Path(self.cfg.base_model).name} "
                                              f"({BACKEND}: {self.path}, {self.device.type})")
        return TrainResult(
            backend=BACKEND, adapter_dir=self.adapter_dir, steps=iters,
            train_loss=last_train.get("train_loss", self.metrics.last("train_loss")),
            val_loss=last_val.get("val_loss", self.metrics.last("val_loss")),
            tokens_per_sec=last_train.get("tokens_per_sec"), peak_memory_gb=last_train.get("peak_memory_gb"),
            seconds=round(time.perf_counter() - tic, 2), files=files)
