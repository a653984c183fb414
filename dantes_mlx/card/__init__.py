"""The character card: citations summarised block by block, merged, grounded in the citations; a persona from it."""
