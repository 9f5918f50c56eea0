"""Checkpoints and the forward pass that turns sentences into word vectors (no Ray here)."""
