"""`python -m dantes_mlx` runs the CLI."""

from dantes_mlx.cli import main

main()
