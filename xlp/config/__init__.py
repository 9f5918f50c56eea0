"""The spec: typed models of the core keys (spec.py), read from YAML with errors that name file, line and key
(loading.py, source.py). It imports no task: each task owns the model of its options."""

from xlp.config.loading import load_spec, spec_from_dict
from xlp.config.source import SpecSource
from xlp.config.spec import (
    AnalysisSpec,
    CheckpointSpec,
    ClusterSpec,
    DataSpec,
    PretrainSpec,
    ProbeSpec,
    Spec,
    TaskGridSpec,
)

__all__ = ["AnalysisSpec", "CheckpointSpec", "ClusterSpec", "DataSpec", "PretrainSpec", "ProbeSpec", "Spec",
           "SpecSource", "TaskGridSpec", "load_spec", "spec_from_dict"]
