"""The generate stage: instruction/response pairs in the character's voice from citations, facts or labels."""
