"""The export stage: PEFT adapter, GGUF LoRA, fused GGUF and Ollama Modelfile, checked by the parity gate."""
