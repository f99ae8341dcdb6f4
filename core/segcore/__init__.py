"""segcore: a plugin-based semantic-segmentation framework for PyTorch.

The public API, in tiers (plugins import only these):

- ``segcore``: the stage contracts, errors, the plugin machinery and the verbs ``create_model``,
  ``list_components``, ``list_pretrained``, ``from_pretrained``, ``save_pretrained``, ``push_to_hub``, ``predict``;
- ``segcore.pipeline``: pipeline files (load, structure, dump, check, run) and their config classes;
- ``segcore.hub``: the zoo, model folders, the one source resolver;
- ``segcore.layers``: building blocks that several plugins need as code.

Everything is imported on first use (PEP 562), so ``from segcore import Decoder`` does not load the engine, the hub or
the fast path. The package's layers and the import rules between them are in ``pyproject.toml``
(``[tool.importlinter]``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from segcore import _compat
from segcore._version import __version__

_compat.install()

# public name -> module that defines it
_EXPORTS = {
    # contracts
    **dict.fromkeys(
        ["Attention", "AttentionSlots", "Backbone", "Dataset", "DatasetMeta", "Decoder", "Enhancer", "FeatureInfo",
         "Loss", "ModelOutput", "RawSample", "Resize", "Upsample"], "segcore.contracts.stages"),  # fmt: skip
    **dict.fromkeys(
        ["SegcoreError", "ConfigError", "ContractError", "DataError", "PluginError", "RegistryError",
         "DamagedFileError"], "segcore.errors"),  # fmt: skip
    "hookimpl": "segcore.contracts.hookspecs",
    "Registry": "segcore.contracts.registry",
    "Entry": "segcore.contracts.registry",
    "get_plugin_manager": "segcore.contracts.plugins",
    "load_registry": "segcore.contracts.plugins",
    # verbs
    "create_model": "segcore.api",
    "list_components": "segcore.api",
    "list_pretrained": "segcore.api",
    "from_pretrained": "segcore.hub.folder",
    "save_pretrained": "segcore.hub.folder",
    "push_to_hub": "segcore.hub.publish",
    "predict": "segcore.engine.predict",
    "optimize_for_inference": "segcore.inference.fast",
    # building and weights (plugin authors)
    "SegModel": "segcore.model.build",
    "build_model": "segcore.model.build",
    "inference_state_dict": "segcore.model.build",
    "init_from": "segcore.model.build",
    "without_training_heads": "segcore.model.build",
    "load_weights": "segcore.model.weights",
    "adapt_input_channels": "segcore.model.weights",
    "read_weights": "segcore.model.weights",
    "save_weights": "segcore.model.weights",
    "timm_weights_file": "segcore.model.pretrained",
    "TimmBackbone": "segcore.builtin.backbones",
    "TimmBackboneConfig": "segcore.builtin.backbones",
    # pipelines (also in segcore.pipeline)
    "PipelineConfig": "segcore.config.schema",
    "ModelConfig": "segcore.config.schema",
    "load_pipeline": "segcore.config.load",
    "dump_pipeline": "segcore.config.dump",
    # data (dataset plugins)
    **dict.fromkeys(
        ["PairDataset", "build_dataset", "dataset_meta", "default_palette", "read_image", "read_label"],
        "segcore.data.datasets"),  # fmt: skip
}
_SUBPACKAGES = {"layers", "pipeline", "hub", "contracts", "config", "data", "model", "engine", "inference", "tools",
                "cli", "builtin", "testing"}  # fmt: skip

__all__ = sorted([*_EXPORTS, "__version__", "layers"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # the next lookup skips __getattr__
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"segcore.{name}")
    raise AttributeError(f"module 'segcore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBPACKAGES})


if TYPE_CHECKING:  # what type checkers and IDEs see
    from segcore import layers
    from segcore.api import create_model, list_components, list_pretrained
    from segcore.builtin.backbones import TimmBackbone, TimmBackboneConfig
    from segcore.config import ModelConfig, PipelineConfig, dump_pipeline, load_pipeline
    from segcore.contracts.hookspecs import hookimpl
    from segcore.contracts.plugins import get_plugin_manager, load_registry
    from segcore.contracts.registry import Entry, Registry
    from segcore.contracts.stages import (Attention, AttentionSlots, Backbone, Dataset, DatasetMeta, Decoder, Enhancer,
                                          FeatureInfo, Loss, ModelOutput, RawSample, Resize, Upsample)  # fmt: skip
    from segcore.data.datasets import (PairDataset, build_dataset, dataset_meta, default_palette, read_image,
                                       read_label)  # fmt: skip
    from segcore.engine.predict import predict
    from segcore.errors import (ConfigError, ContractError, DamagedFileError, DataError, PluginError, RegistryError,
                                SegcoreError)  # fmt: skip
    from segcore.hub.folder import from_pretrained, save_pretrained
    from segcore.hub.publish import push_to_hub
    from segcore.inference.fast import optimize_for_inference
    from segcore.model.build import (SegModel, build_model, inference_state_dict, init_from,
                                     without_training_heads)  # fmt: skip
    from segcore.model.pretrained import timm_weights_file
    from segcore.model.weights import adapt_input_channels, load_weights, read_weights, save_weights
