"""Export targets: our GGUF writer and llama.cpp quantization (gguf.py), and the parity gate (parity.py)."""
