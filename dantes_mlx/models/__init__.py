"""Base models: the embedded real model (SmolLM2-135M-Instruct) and GGUF -> Hugging Face folder import."""
