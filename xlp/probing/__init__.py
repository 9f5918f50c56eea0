"""Probe solvers and the features they are fit on; they know nothing of tasks."""
