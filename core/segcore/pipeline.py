"""Pipeline files: read, structure, check, write back and run them, and sweeps of them (the API behind ``segcore run``,
``segcore check`` and ``segcore sweep``)."""

from __future__ import annotations

from segcore.config import (DataConfig, DatasetSpec, EvalConfig, LossSpec, ModelConfig, PipelineConfig,
                            RunConfig, TrainConfig, dump_pipeline, load_pipeline, read_toml, resolve_bases,
                            structure_pipeline, structure_table, unstructure)  # fmt: skip
from segcore.engine.run import run_pipeline
from segcore.engine.trainer import Trainer
from segcore.model.check import check_pipeline, totals
from segcore.tools.sweep import load_sweep, run_sweep

__all__ = [
    "DataConfig", "DatasetSpec", "EvalConfig", "LossSpec", "ModelConfig", "PipelineConfig", "RunConfig",
    "TrainConfig", "Trainer", "check_pipeline", "dump_pipeline", "load_pipeline", "load_sweep", "read_toml", "resolve_bases",
    "run_pipeline", "run_sweep", "structure_pipeline", "structure_table", "totals", "unstructure",
]  # fmt: skip
