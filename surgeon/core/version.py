"""The surgeon version (a leaf module: files record it without importing the package root)."""

__version__ = "0.1.0"
