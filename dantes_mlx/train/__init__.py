"""The train stage: fine-tuning through a backend (mlx-lm built in, plugins through entry points)."""
