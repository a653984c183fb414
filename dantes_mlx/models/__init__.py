"""Base models and their files: checks made before a library loads them."""
