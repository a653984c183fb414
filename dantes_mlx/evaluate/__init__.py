"""The eval stage: base vs fine-tuned on the same prompts, scored, judged and reported."""
