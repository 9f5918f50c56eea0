"""xlp: probe every checkpoint of a multilingual pretraining run, per language and skill.

From a notebook: `run = xlp.load("runs/quickstart")`, then `run.curves`, `run.emergence`, `run.findings`,
`run.plot.curves(task="pos", layer=4, langs=["en", "de"])`; `xlp.launch(spec)` and `xlp.validate(spec)` for
scripts (xlp/api.py). Imported on first use, so `import xlp` stays light."""

from xlp.version import __version__

__all__ = ["__version__", "launch", "load", "validate"]


def __getattr__(name: str):
    if name in ("launch", "load", "validate"):
        from xlp import api

        return getattr(api, name)
    raise AttributeError(f"module 'xlp' has no attribute {name!r}")
