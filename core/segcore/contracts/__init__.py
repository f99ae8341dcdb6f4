"""Contracts: the typed stages, the registry, the plugin hook and its discovery. Imports nothing above it."""

from segcore.contracts.hookspecs import hookimpl
from segcore.contracts.plugins import BUILTIN_PLUGINS, DISABLE_VAR, get_plugin_manager, load_registry
from segcore.contracts.registry import Entry, PluginInfo, Pretrained, Registry
from segcore.contracts.stages import (STAGES, WIRING, Attention, AttentionSlots, Backbone, Dataset, DatasetMeta, Decoder,
                                      Enhancer, FeatureInfo, Loss, ModelOutput, Resize, Upsample, stage_of)  # fmt: skip

__all__ = [
    "BUILTIN_PLUGINS", "DISABLE_VAR", "STAGES", "WIRING", "Attention", "AttentionSlots", "Backbone", "Dataset",
    "DatasetMeta", "Decoder", "Enhancer", "Entry", "FeatureInfo", "Loss", "ModelOutput", "PluginInfo", "Pretrained",
    "Registry", "Resize", "Upsample", "get_plugin_manager", "hookimpl", "load_registry", "stage_of",
]  # fmt: skip
