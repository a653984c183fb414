"""The prepare, validate and stats stages: leak-free mlx-lm datasets, checked and described."""
