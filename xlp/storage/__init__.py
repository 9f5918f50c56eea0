"""Storage: a run folder on any pyarrow filesystem, atomic writes, the feature shard layout."""

from xlp.storage.store import Store

__all__ = ["Store"]
