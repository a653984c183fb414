"""The parity gate's reference for adapters this backend wrote: transformers base + PEFT adapter, in fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dantes_mlx.train.sdk import PEFT_WEIGHTS, ModelError, resolve_model


class TorchReference:
    """dantes_mlx.export.parity.Reference backed by transformers (+ peft): what the adapter was trained in."""

    def __init__(self, model_dir: str | Path, adapter_dir: str | Path | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = resolve_model(str(model_dir))
        self.name = f"transformers {folder}" + (f" + PEFT {adapter_dir}" if adapter_dir else "")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        # fp32: llama.cpp's f16 GGUF must match it to numerical noise.
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        if adapter_dir is not None:
            from peft import PeftModel

            if not (Path(adapter_dir) / PEFT_WEIGHTS).is_file():
                raise ModelError("no PEFT adapter (adapter_model.safetensors) here", path=adapter_dir,
                                 fix="point --adapter-path at the folder `dantes-mlx train --backend unsloth` wrote")
            model = PeftModel.from_pretrained(model, str(adapter_dir))
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = model.to(self.device).eval()

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def logits(self, token_ids: list[int]) -> np.ndarray:
        import torch

        if self.model is None:
            raise RuntimeError("this TorchReference was released; load a new one")
        with torch.no_grad():
            ids = torch.tensor([token_ids], dtype=torch.long, device=self.device)
            out = self.model(input_ids=ids).logits[0]
        return out.float().cpu().numpy()

    def release(self) -> None:
        """Free the model (tokenizer and chat template stay usable)."""
        import gc

        self.model = None
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()
