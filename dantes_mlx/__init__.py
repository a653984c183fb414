"""dantes-mlx: turn a public-domain book into a persona model you can `ollama run`."""

__version__ = "0.1.0"
