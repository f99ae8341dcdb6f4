"""The typed stage interfaces every component implements.

A pipeline is ``image -> Backbone -> Enhancer* -> Decoder (+ Attention in its slots) -> classifier -> logits``
at the input size, trained with Losses on a Dataset. Each component is built as ``Component(cfg, *, wiring)``:
``cfg`` is an instance of the frozen attrs class registered with it (what a user writes in TOML), ``wiring`` is
what the pipeline builder passes from the neighbouring stages (never written in TOML).

Feature maps travel as a list, finest first; each stage declares what it outputs as a tuple of `FeatureInfo`
(channels and stride relative to the input image), like timm's ``FeatureInfo.channels()``/``.reduction()``.
"""

from __future__ import annotations

__all__ = [
    "Attention",
    "AttentionSlots",
    "Backbone",
    "Dataset",
    "DatasetMeta",
    "Decoder",
    "Enhancer",
    "FeatureInfo",
    "Loss",
    "ModelOutput",
    "OPTIONAL_WIRING",
    "RawSample",
    "Resize",
    "STAGES",
    "WIRING",
    "Upsample",
    "stage_of",
    "takes_wiring",
]

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Literal, NamedTuple

import numpy as np
import torch.utils.data
from attrs import frozen
from torch import Tensor, nn

from segcore.errors import DataError
from segcore.layers.basic import resize_to


@frozen
class FeatureInfo:
    """One feature map: ``channels`` and ``stride`` (input size / map size, rounded up by strided convs)."""

    channels: int
    stride: int


class ModelOutput(NamedTuple):
    """What a model returns (a NamedTuple, so torch.export, jit.trace and torch.compile(fullgraph=True) see a pytree).

    logits: (B, K, H, W) at the input size.
    aux: auxiliary heads' logits by name, each (B, K, H, W) at the input size; training only.
    extras: other named tensors a loss may need (embeddings, ...), as the training-only head made them.
    """

    logits: Tensor
    aux: dict[str, Tensor] = {}  # never mutated: the model builds new dicts
    extras: dict[str, Tensor] = {}


@frozen
class Resize:
    """How a map is brought to a larger size: ``Resize("bicubic", align_corners=True)(x, size)``.

    Always to an exact size (BLOCKS 0.2). A Decoder's ``final_resize`` says how its logits reach the input size.
    """

    mode: Literal["nearest", "bilinear", "bicubic"] = "bilinear"
    align_corners: bool = False

    def __call__(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return resize_to(x, size, mode=self.mode, align_corners=self.align_corners)


class Upsample(nn.Module):
    """An upsampling place: resize to the exact target size, then the Attention the config put in its slot.

    ``forward(x (B, C, h, w), size) -> (B, C, *size)``. Built by ``AttentionSlots.upsample``.
    """

    def __init__(self, resize: Resize, attention: nn.Module) -> None:
        super().__init__()
        self.resize = resize
        self.attention = attention

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return self.attention(self.resize(x, size))


class AttentionSlots:
    """Builds the Attention a config put into a component's named slot, or ``nn.Identity`` for an empty slot.

    A component declares its slot names in ``attention_slots`` and calls ``slots("after_fusion", channels)`` in
    its constructor, once per place (a slot used at several places, e.g. after every upsampling, is called once
    per place and gets independent modules).
    """

    def __init__(self, factories: Mapping[str, Callable[[int], nn.Module]] | None = None) -> None:
        self._factories = dict(factories or {})

    def __call__(self, slot: str, channels: int) -> nn.Module:
        factory = self._factories.get(slot)
        return nn.Identity() if factory is None else factory(channels)

    def upsample(self, slot: str, channels: int, *, resize: Resize = Resize()) -> Upsample:
        """An upsampling place: `Upsample` resizing with *resize*, then the slot's Attention (if any).

        Decoders name the slot ``"upsample"`` by convention and call this once per upsampling step of their fusion.
        """
        return Upsample(resize, self(slot, channels))


class Backbone(nn.Module):
    """image (B, C, H, W), normalised float -> list of feature maps, finest first.

    Built as ``Backbone(cfg)``, or ``Backbone(cfg, *, in_channels)`` when its constructor takes the keyword: the
    builder then passes ``[model] in_channels`` (C; 3 for RGB) and the backbone builds its first layer for C
    channels (pretrained weights of 3 channels adapted with `segcore.adapt_input_channels`). A backbone without
    the keyword takes only RGB: a pipeline with another ``in_channels`` is refused, naming it. Must set
    ``feature_info`` (one `FeatureInfo` per returned map) in ``__init__`` and accept any H and W (odd sizes too);
    the i-th map has ``ceil(H / stride_i)`` rows or the size the builder gets by running it (declared strides are
    checked against the real shapes by ``segcore check``).
    """

    feature_info: tuple[FeatureInfo, ...]

    def forward(self, image: Tensor) -> list[Tensor]:
        raise NotImplementedError


class Enhancer(nn.Module):
    """features -> features, between the backbone and the decoder.

    Built as ``Enhancer(cfg, *, in_features, attention)``. Sets ``feature_info`` to what it returns: it may
    rewrite some levels and pass the others through (same list length), or collapse several levels into fewer
    (a shorter list); the declared tuple says which, and the decoder is wired to it.
    """

    feature_info: tuple[FeatureInfo, ...]
    attention_slots: ClassVar[tuple[str, ...]] = ()

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        raise NotImplementedError


class Decoder(nn.Module):
    """features (finest first) -> one map (B, out_channels, ~H/stride, ~W/stride).

    Built as ``Decoder(cfg, *, in_features, attention)``. Sets ``out_channels`` and ``stride``; the classifier
    (dropout + 1x1 conv to the class count) and the resize to the input size follow it in the model, the resize
    done as ``final_resize`` says (class or instance attribute; bilinear by default).
    """

    out_channels: int
    stride: int
    final_resize: Resize = Resize()
    attention_slots: ClassVar[tuple[str, ...]] = ()

    def forward(self, features: list[Tensor]) -> Tensor:
        raise NotImplementedError


class Attention(nn.Module):
    """map (B, C, H, W) -> map of the same shape. Built as ``Attention(cfg, *, channels)``."""

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError


class Loss(nn.Module):
    """(logits, target, model output) -> a scalar, or a dict of named scalar terms that sum to the total.

    Built as ``Loss(cfg, *, num_classes, ignore_index)``. ``logits`` (B, K, H, W) are the ones the pipeline
    pointed this loss at (main or an auxiliary head), ``target`` (B, H, W) int64 with ``ignore_index`` where
    there is no label, ``output`` the whole `ModelOutput`. A loss that needs extra tensors names them in ``extras``
    and reads ``output.extras[name]``; the pipeline maps each to a training-only head (``[[loss]] extras``) and
    refuses to build when one is missing.
    """

    extras: ClassVar[tuple[str, ...]] = ()

    def forward(self, logits: Tensor, target: Tensor, output: ModelOutput) -> Tensor | dict[str, Tensor]:
        raise NotImplementedError


@frozen
class DatasetMeta:
    """What a dataset declares about its labels: names, RGB palette (one triple per class) and the ignore id."""

    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = 255

    def __attrs_post_init__(self) -> None:
        if len(self.palette) != len(self.class_names):
            raise ValueError(f"palette has {len(self.palette)} colours for {len(self.class_names)} classes")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@frozen
class RawSample:
    """One sample as stored, before its label values are mapped to class ids: what `segcore data verify` checks.

    image: (H, W, 3) uint8 as decoded. label: (H, W) raw values, or (H, W, C) for a colour mask.
    label_mode: the label file's PIL mode ("L", "P", "RGB", ...), None when the labels do not come from an image
    file. palette: for mode "P", the file's colours (one RGB triple per index). lut: raw value -> class id or the
    ignore id, -1 for a value that is neither (an unknown id); None when the raw values are class ids already.
    """

    image: np.ndarray
    label: np.ndarray
    image_path: Path | None = None
    label_path: Path | None = None
    label_mode: str | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    lut: np.ndarray | None = None


class Dataset(torch.utils.data.Dataset):
    """Samples ``{"image": uint8 (3, H, W), "mask": int64 (H, W)}`` of one split.

    Built as ``Dataset(cfg, *, split)``. Sets ``meta`` (a `DatasetMeta`) and lists its ``splits``; mask values are
    class ids in ``range(meta.num_classes)`` or ``meta.ignore_index``.
    """

    meta: DatasetMeta
    splits: ClassVar[tuple[str, ...]] = ("train", "val")

    @classmethod
    def splits_for(cls, cfg: object) -> tuple[str, ...]:
        """The splits *cfg* offers: ``splits``, unless a dataset's config chooses them."""
        return cls.splits

    @classmethod
    def check_split(cls, cfg: object, split: str) -> None:
        """Raise a DataError unless *split* is one of `splits_for` (the pipeline builder calls it before building)."""
        splits = cls.splits_for(cfg)
        if split not in splits:
            raise DataError(f"{cls.__name__} has no split {split!r}; its splits: {', '.join(splits)}. Set "
                            "data.train_split / data.val_split to one of them.")  # fmt: skip

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def raw_sample(self, index: int) -> RawSample:
        """Sample *index* as stored, labels not yet mapped nor checked (`segcore data verify` reads these).

        Datasets that read files override it to name them and to return the label file's values before any
        mapping (`segcore.data.PairDataset` does); this default serves `__getitem__`'s sample, whose mask values
        are taken as class ids."""
        sample = self[index]
        return RawSample(image=sample["image"].permute(1, 2, 0).numpy(), label=sample["mask"].numpy())


STAGES: tuple[type, ...] = (Backbone, Enhancer, Decoder, Attention, Loss, Dataset)

# the keyword-only wiring the pipeline builder passes to each stage's constructor, after ``cfg``
WIRING: dict[type, tuple[str, ...]] = {
    Backbone: (),
    Enhancer: ("in_features", "attention"),
    Decoder: ("in_features", "attention"),
    Attention: ("channels",),
    Loss: ("num_classes", "ignore_index"),
    Dataset: ("split",),
}


# wiring a stage's constructor may declare; the builder passes it only to those that do (a Backbone without
# ``in_channels`` takes RGB only)
OPTIONAL_WIRING: dict[type, tuple[str, ...]] = {Backbone: ("in_channels",)}


def takes_wiring(cls: type, name: str) -> bool:
    """Whether *cls*'s constructor declares the keyword *name* (an `OPTIONAL_WIRING` entry)."""
    param = inspect.signature(cls).parameters.get(name)
    return param is not None and param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD)


def stage_of(cls: type) -> type | None:
    """The stage base class *cls* derives from, or None."""
    for stage in STAGES:
        if isinstance(cls, type) and issubclass(cls, stage):
            return stage
    return None
