"""Layers and math shared by more than one family."""
