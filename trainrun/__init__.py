"""trainrun: a command-line experiment runner for training neural networks with PyTorch."""
__version__ = "0.1.0"
