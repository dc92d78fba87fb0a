"""Metrics shared by every family."""

from zoo.metrics.likelihood import bits_per_character, bits_per_dim, perplexity

__all__ = ["bits_per_character", "bits_per_dim", "perplexity"]
