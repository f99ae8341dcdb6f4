"""Parameter groups, optimizers and learning-rate schedules (a pure function of the step, so resuming is exact)."""

from __future__ import annotations

__all__ = ["LRSchedule", "build_optimizer", "layer_ids", "param_groups"]

import math
import re
from collections.abc import Iterable

import torch
from attrs import frozen
from torch import nn

from segcore.config.schema import TrainConfig

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
# a block: Swin's layers_i.blocks.j (and its downsample), ViT's blocks.i, ConvNeXt's stages.i, ResNet's layerK.i
_BLOCK = re.compile(r"((?:layers|stages)[._]\d+\.(?:blocks\.\d+|downsample)|(?:blocks|layers|stages|layer\d)[._]\d+)")


def _no_decay_names(module: nn.Module) -> set[str]:
    """Parameters of norm layers (by type, or a module named *norm*) and every bias; layer scales and position
    embeddings stay decayed."""
    names = set()
    for mod_name, mod in module.named_modules():
        for p_name, _ in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if isinstance(mod, _NORMS) or p_name == "bias" or "norm" in mod_name.rsplit(".", 1)[-1].lower():
                names.add(full)
    return names


def layer_ids(backbone: nn.Module) -> tuple[dict[str, int], int]:
    """Layer index of each backbone parameter for layer-wise lr decay: 0 for the stem/patch embedding, 1..N for
    the blocks in order (``blocks.i``, ``layers.i.blocks.j``, ``stages.i``...), N + 1 for what follows them."""
    blocks: dict[str, int] = {}
    ids: dict[str, int] = {}
    seen_block = False
    pending_after = []
    for name, _ in backbone.named_parameters():
        m = _BLOCK.search(name)
        if m:
            seen_block = True
            ids[name] = blocks.setdefault(m.group(1), len(blocks) + 1)
        elif not seen_block:
            ids[name] = 0
        else:
            pending_after.append(name)
    n = len(blocks)
    ids.update({name: n + 1 for name in pending_after})
    return ids, n


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Optimizer groups: backbone vs rest (``backbone_lr_mult``), layer-wise decay over the backbone's blocks
    (``layer_decay``), no weight decay on norms and biases (``no_decay_norm_bias``). Each group keeps its
    ``lr_scale`` and a ``name``; the schedule sets ``lr = cfg.lr * lr_scale * factor(step)``. A backbone frozen for
    the whole run (``model.frozen_backbone``) is in no group."""
    include_backbone = not getattr(model, "frozen_backbone", False)
    no_decay = _no_decay_names(model) if cfg.no_decay_norm_bias else set()
    backbone = getattr(model, "backbone", None)
    ids, n_layers = layer_ids(backbone) if (backbone is not None and cfg.layer_decay) else ({}, 0)
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        in_backbone = name.startswith("backbone.")
        if in_backbone and not include_backbone:
            continue
        if not in_backbone and not p.requires_grad:
            continue
        scale = cfg.backbone_lr_mult if in_backbone else 1.0
        layer = None
        if in_backbone and cfg.layer_decay:
            layer = ids.get(name.removeprefix("backbone."), n_layers + 1)
            scale *= cfg.layer_decay ** (n_layers + 1 - layer)
        decay = 0.0 if name in no_decay else cfg.weight_decay
        key = ("backbone" if in_backbone else "head", layer, decay)
        group = groups.setdefault(
            key,
            {"params": [], "name": "/".join(str(k) for k in key if k is not None), "lr_scale": scale, "weight_decay": decay},
        )
        group["params"].append(p)
    return list(groups.values())


def build_optimizer(groups: Iterable[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = [dict(g, lr=cfg.lr * g["lr_scale"]) for g in groups]
    impl = {"auto": {}, "fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}[cfg.optimizer_impl]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, **impl)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **impl)


@frozen
class LRSchedule:
    """factor(step) in (0, 1]: linear warmup from ``warmup_start_ratio``, then poly / cosine / step / constant
    decaying towards ``min_lr_ratio`` at ``total`` steps."""

    cfg: TrainConfig
    total: int

    def factor(self, step: int) -> float:
        c = self.cfg
        t = min(step / max(self.total, 1), 1.0)
        if c.schedule == "poly":
            f = c.min_lr_ratio + (1 - c.min_lr_ratio) * (1 - t) ** c.poly_power
        elif c.schedule == "cosine":
            f = c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        elif c.schedule == "step":
            f = c.step_gamma ** sum(t >= m for m in c.step_milestones)
        else:
            f = 1.0
        if step < c.warmup_iters:
            f *= c.warmup_start_ratio + (1 - c.warmup_start_ratio) * step / c.warmup_iters
        return f

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's lr for *step*; return the base lr (before group scales)."""
        f = self.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = self.cfg.lr * group.get("lr_scale", 1.0) * f
        return self.cfg.lr * f
