"""Base models: checks made before a library loads their files, the embedded real model (SmolLM2-135M-Instruct),
GGUF -> Hugging Face folder import, config readers."""
