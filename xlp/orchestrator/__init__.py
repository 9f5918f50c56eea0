"""The orchestrator composes tasks, models and storage into a resumable Ray run."""
