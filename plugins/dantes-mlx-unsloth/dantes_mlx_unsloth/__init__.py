"""dantes-mlx-unsloth: the `unsloth` training backend (PyTorch: Unsloth on CUDA, transformers + peft elsewhere)."""

__version__ = "0.1.0"
