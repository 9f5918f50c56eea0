"""Statistics on a run's rows: curves, emergence, best checkpoints, findings. Knows nothing of Ray."""
