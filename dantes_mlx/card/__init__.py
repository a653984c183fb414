"""The character card: citations summarised block by block, merged, grounded in the citations; a persona from it."""

from dantes_mlx.card.persona import card_dir, persona_for
from dantes_mlx.card.stage import CardSummary, build_card, check_paths, output_files

__all__ = ["CardSummary", "build_card", "card_dir", "check_paths", "output_files", "persona_for"]
