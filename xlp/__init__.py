"""xlp: probe every checkpoint of a multilingual pretraining run, per language and skill."""

from xlp.version import __version__

__all__ = ["__version__"]
