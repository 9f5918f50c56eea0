"""Fetching inputs: UD releases into a local cache."""
