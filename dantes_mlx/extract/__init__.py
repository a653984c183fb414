"""The extract stage: a character's citations from the clean books, by a local LLM or the French dialogue rules."""
