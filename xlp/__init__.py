"""xlp: probe every checkpoint of a multilingual pretraining run, per language and skill."""

__version__ = "0.1.0"
