"""The prefs stage: preference pairs (in-character answer vs the base model's own) for `train --method dpo|orpo`."""
