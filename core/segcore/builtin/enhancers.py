"""Generic enhancers: per-level 1x1 projections and level selection."""

from __future__ import annotations

from collections.abc import Sequence

from attrs import field, frozen
from torch import Tensor, nn

from segcore.errors import ConfigError, ContractError
from segcore.contracts.hookspecs import hookimpl
from segcore.contracts.registry import Registry
from segcore.contracts.stages import AttentionSlots, Enhancer, FeatureInfo


def _levels(levels: Sequence[int] | None, n: int, who: str) -> tuple[int, ...]:
    picked = tuple(range(n)) if levels is None else tuple(i % n if -n <= i < n else i for i in levels)
    bad = [i for i in picked if not 0 <= i < n]
    if bad:
        raise ContractError(f"{who}: levels {list(levels or ())} name maps that do not exist; the input has {n} (0..{n - 1})")
    return picked


def _widths(_: object, attribute: object, value: int | tuple[int, ...]) -> None:
    if any(c <= 0 for c in ((value,) if isinstance(value, int) else value)) or value == ():
        raise ValueError(f"channels must be a positive int or a list of positive ints (one per level), got {value!r}")


@frozen
class ProjectConfig:
    """Table [[model.enhancers]] when name = "project": 1x1 conv-BN-ReLU on the chosen levels, to ``channels``
    (one width for all, or one per chosen level: e.g. HRNet stream widths [48, 96, 192, 384])."""

    channels: int | tuple[int, ...] = field(default=256, validator=_widths)
    levels: tuple[int, ...] | None = None  # None: every level; the others pass through unchanged


class Project(Enhancer):
    """Rewrites the chosen levels to their widths (1x1 conv, BN, ReLU), keeps the others; same list length.

    Slot ``per_level`` follows each projection. Use: 1x1 channel adapters between a frozen encoder and a decoder.
    """

    attention_slots = ("per_level",)

    def __init__(self, cfg: ProjectConfig, *, in_features: Sequence[FeatureInfo], attention: AttentionSlots) -> None:
        super().__init__()
        self.levels = _levels(cfg.levels, len(in_features), "project")
        widths = (cfg.channels,) * len(self.levels) if isinstance(cfg.channels, int) else tuple(cfg.channels)
        if len(widths) != len(self.levels):
            raise ConfigError(f"project: channels lists {len(widths)} widths for {len(self.levels)} levels "
                              f"{list(self.levels)}; give one per level or a single int")  # fmt: skip
        width = dict(zip(self.levels, widths))
        self.proj = nn.ModuleDict(
            {
                str(i): nn.Sequential(
                    nn.Conv2d(in_features[i].channels, width[i], 1, bias=False),
                    nn.BatchNorm2d(width[i]),
                    nn.ReLU(inplace=True),
                    attention("per_level", width[i]),
                )
                for i in self.levels
            }
        )
        self.feature_info = tuple(
            FeatureInfo(width[i], f.stride) if i in width else f for i, f in enumerate(in_features)
        )

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        return [self.proj[str(i)](f) if i in self.levels else f for i, f in enumerate(features)]


@frozen
class SelectConfig:
    """Table [[model.enhancers]] when name = "select": keep only some levels, in the given order."""

    levels: tuple[int, ...] = (0, 1, 2, 3)


class Select(Enhancer):
    """Keeps the chosen levels (a shorter list): e.g. drop a stride-2 stem map before a 4-level decoder."""

    def __init__(self, cfg: SelectConfig, *, in_features: Sequence[FeatureInfo], attention: AttentionSlots) -> None:
        super().__init__()
        self.levels = _levels(cfg.levels, len(in_features), "select")
        self.feature_info = tuple(in_features[i] for i in self.levels)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        return [features[i] for i in self.levels]


@hookimpl
def segcore_register(registry: Registry) -> None:
    registry.add(Project, name="project", config=ProjectConfig, tiny=ProjectConfig(channels=8, levels=(2, 3)))
    registry.add(Select, name="select", config=SelectConfig, tiny=SelectConfig(levels=(1, 3)))
