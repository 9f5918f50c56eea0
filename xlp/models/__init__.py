"""Checkpoints and the forward pass that turns sentences into word vectors (no Ray here)."""


def quiet_transformers() -> None:
    """No per-load progress bars or load reports: xlp shows its own progress."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
