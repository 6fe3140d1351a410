"""The package version, at the bottom so that every layer can record it."""

__version__ = "0.2.0"
