"""Package data: the demo scene and the tiny model's French corpus."""
