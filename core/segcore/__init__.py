"""segcore: a plugin-based semantic-segmentation framework for PyTorch.

Plugins import only what this module exports.
"""

from __future__ import annotations

from . import _interrupts  # noqa: F401  (first: a Ctrl-C during the imports below ends the CLI quietly)
from . import layers
from .builtin.backbones import TimmBackbone, TimmBackboneConfig
from .config import PipelineConfig, dump_pipeline, load_pipeline
from .data import PairDataset, build_dataset, dataset_meta, default_palette, read_image, read_label
from .engine.predict import predict
from .fastpath import optimize_for_inference
from .errors import ConfigError, ContractError, DataError, PluginError, RegistryError, SegcoreError
from .hookspecs import hookimpl
from .hub import from_pretrained, push_to_hub, save_pretrained
from .model import SegModel, build_model, inference_state_dict, init_from, without_training_heads
from .weights import load_weights, read_weights, save_weights
from .plugins import get_plugin_manager, load_registry
from .pretrained import timm_weights_file
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
    "PairDataset",
    "PipelineConfig",
    "PluginError",
    "Registry",
    "RegistryError",
    "Resize",
    "SegModel",
    "SegcoreError",
    "TimmBackbone",
    "TimmBackboneConfig",
    "Upsample",
    "build_dataset",
    "build_model",
    "dataset_meta",
    "default_palette",
    "dump_pipeline",
    "from_pretrained",
    "get_plugin_manager",
    "hookimpl",
    "inference_state_dict",
    "init_from",
    "layers",
    "load_pipeline",
    "load_registry",
    "load_weights",
    "optimize_for_inference",
    "predict",
    "push_to_hub",
    "read_image",
    "read_label",
    "read_weights",
    "save_pretrained",
    "save_weights",
    "timm_weights_file",
    "without_training_heads",
]
