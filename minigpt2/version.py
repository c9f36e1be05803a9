"""The package's version, here so that every layer (the CLI's --version too) can read it."""

__version__ = "0.1.0"
