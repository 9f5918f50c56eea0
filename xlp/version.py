"""xlp's version: part of every unit's hash (a new version redoes what it produced)."""

__version__ = "0.1.0"
