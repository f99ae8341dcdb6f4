"""segcore: a plugin-based semantic-segmentation framework for PyTorch.

Plugins import only what this module exports.
"""

from __future__ import annotations

from . import _interrupts  # noqa: F401  (first: a Ctrl-C during the imports below ends the CLI quietly)
from .config import PipelineConfig, load_pipeline
from .engine.predict import predict
from .errors import ConfigError, ContractError, DataError, PluginError, RegistryError, SegcoreError
from . import layers
from .hookspecs import hookimpl
from .model import SegModel, build_model
from .plugins import get_plugin_manager, load_registry
from .registry import Entry, Registry
from .stages import (
    Attention,
    AttentionSlots,
    Backbone,
    Dataset,
    DatasetMeta,
    Decoder,
    Enhancer,
    FeatureInfo,
    Loss,
    ModelOutput,
    Resize,
    Upsample,
)

__version__ = "0.1.0"

__all__ = [
    "Attention",
    "AttentionSlots",
    "Backbone",
    "ConfigError",
    "ContractError",
    "DataError",
    "Dataset",
    "DatasetMeta",
    "Decoder",
    "Enhancer",
    "Entry",
    "FeatureInfo",
    "Loss",
    "ModelOutput",
    "PipelineConfig",
    "PluginError",
    "Registry",
    "RegistryError",
    "Resize",
    "SegModel",
    "SegcoreError",
    "Upsample",
    "build_model",
    "get_plugin_manager",
    "hookimpl",
    "load_pipeline",
    "load_registry",
    "predict",
    "layers",
]
