"""The chat and ask commands: generation engines (MLX + adapter, or a GGUF) and the chat loop."""
