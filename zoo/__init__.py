"""zoo: a PyTorch model zoo for generative architectures."""

__version__ = "0.1.0"
