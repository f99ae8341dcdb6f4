"""Pipeline files: TOML -> frozen attrs classes through one cattrs converter, validated whole before building.

Each component table (``[model.backbone]``, ``[[model.enhancers]]``, ``[model.decoder]``, ``[[loss]]``,
``[data.dataset]``, attention slots) names its component with ``name``; the rest of the table is structured into
the config class that component registered. Every problem in a file is reported at once, each with its TOML
path, the bad value and the allowed choices.
"""

from __future__ import annotations

__all__ = [
    "AttentionSpec",
    "AugmentConfig",
    "AuxHeadConfig",
    "BackboneSpec",
    "ComponentSpec",
    "DataConfig",
    "DatasetSpec",
    "DecoderSpec",
    "EnhancerSpec",
    "EvalConfig",
    "LossSpec",
    "ModelConfig",
    "PipelineConfig",
    "PredictConfig",
    "RandomSplitConfig",
    "RunConfig",
    "TrainConfig",
    "dump_pipeline",
    "load_pipeline",
    "make_converter",
    "resolve_bases",
    "structure_pipeline",
    "unstructure",
]

import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import attrs
import cattrs
from attrs import field, frozen
from attrs.validators import ge, gt, le, lt
from cattrs.errors import AttributeValidationNote, ClassValidationError, ForbiddenExtraKeysError

from segcore.errors import ConfigError, SegcoreError, did_you_mean
from segcore.contracts.registry import Registry
from segcore.contracts.validators import each_positive, fractions, fractions_each, non_empty, positive_size
from segcore.contracts.stages import Attention, Backbone, Dataset, Decoder, Enhancer, Loss

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# -- component tables ---------------------------------------------------------------------------------------------



def _range(instance: object, attribute: object, value: tuple[float, float] | None) -> None:
    if value is not None and not 0 < value[0] <= value[1]:
        raise ValueError(f"'{attribute.name}' must be [low, high] with 0 < low <= high, got {list(value)}")


@frozen
class AugmentConfig:
    """``[data.augment]``: what happens to each training batch on the device."""

    scale: tuple[float, float] | None = field(default=None, validator=_range)  # random rescale, e.g. [0.5, 2.0]
    # (H, W) of the training crops; padded with ignore where the image ends
    crop_size: tuple[int, int] | None = field(default=None, validator=positive_size)
    hflip: float = field(default=0.5, validator=[ge(0.0), le(1.0)])  # probability
    brightness: float = field(default=0.0, validator=ge(0.0))
    contrast: float = field(default=0.0, validator=ge(0.0))
    saturation: float = field(default=0.0, validator=ge(0.0))
    hue: float = field(default=0.0, validator=[ge(0.0), le(0.5)])
    jitter_p: float = field(default=1.0, validator=[ge(0.0), le(1.0)])
    # torch.compile the four colour steps: inductor fuses their element-wise kernels, after a one-off compile of
    # several seconds per process; the eager default is already as fast as torchvision (bench/bench_data.py)
    compile: bool = False


# -- scale + padded crop -----------------------------------------------------------------------------------------------


@frozen
class ComponentSpec:
    """A component table: ``name`` picks the registered component, the other keys fill its config class."""

    stage: ClassVar[type]
    name: str
    config: Any


@frozen
class AttentionSpec(ComponentSpec):
    stage = Attention


@frozen
class BackboneSpec(ComponentSpec):
    """``[model.backbone]``; ``frozen = true`` keeps it fixed for the whole run (no gradients, BN statistics
    fixed, run under no_grad, absent from the optimizer and EMA)."""

    stage = Backbone
    frozen: bool = False


@frozen
class _WiredSpec(ComponentSpec):
    """Enhancers and decoders: attention slots to fill, and the input channels and strides the user expects
    (checked against the stage before when the model is built)."""

    attention: Mapping[str, AttentionSpec] = field(factory=dict)
    in_channels: tuple[int, ...] | None = None
    in_strides: tuple[int, ...] | None = None


@frozen
class EnhancerSpec(_WiredSpec):
    stage = Enhancer


@frozen
class DecoderSpec(_WiredSpec):
    stage = Decoder


@frozen
class LossSpec(ComponentSpec):
    """A ``[[loss]]`` table: ``weight`` scales it in the total; ``heads`` lists the logits it applies to ("main" and
    names of ``[model.aux]`` logits heads; default all of them); ``extras`` maps the extra tensors the loss reads
    (its class's ``extras``) to the ``[model.aux]`` heads with ``output = "extra"`` that make them (default: the
    same name)."""

    stage = Loss
    weight: float = field(default=1.0, validator=ge(0.0))
    heads: tuple[str, ...] | None = None
    extras: Mapping[str, str] = field(factory=dict)


@frozen
class DatasetSpec(ComponentSpec):
    stage = Dataset


# -- pipeline sections --------------------------------------------------------------------------------------------


AUX_WEIGHT = 0.4  # mmseg's auxiliary FCN head weight


@frozen
class AuxHeadConfig:
    """``[model.aux.<name>]``: a training-only head, absent from the inference model, its weights and exports.

    ``source``: what it reads: ``"backbone"`` levels (``in_index`` picks them) or the ``"decoder"``'s output map.
    ``output``: ``"logits"`` (its decoder, dropout, a 1x1 classifier, resized to the input; the losses whose
    ``heads`` name it apply to it, scaled by ``weight``) or ``"extra"`` (its decoder's map as is, in
    ``ModelOutput.extras[<name>]`` for losses that declare it).
    """

    decoder: DecoderSpec
    source: Literal["backbone", "decoder"] = "backbone"
    output: Literal["logits", "extra"] = "logits"
    in_index: tuple[int, ...] | None = None
    weight: float = field(default=AUX_WEIGHT, validator=ge(0.0))
    dropout: float = field(default=0.1, validator=[ge(0.0), lt(1.0)])


def _model_slots(_: Any, attribute: Any, value: Mapping[str, Any]) -> None:
    bad = [k for k in value if k not in MODEL_SLOTS]
    if bad:
        raise ValueError(f"[model.attention] has no slot {bad[0]!r}{did_you_mean(bad[0], MODEL_SLOTS)}; the model's slots: "
                         f"{', '.join(MODEL_SLOTS)}")


MODEL_SLOTS = ("final_upsample",)  # after the logits are resized to the input size


@frozen
class ModelConfig:
    """``[model]``: the stages, the classifier's dropout and the input normalisation."""

    backbone: BackboneSpec
    decoder: DecoderSpec
    enhancers: tuple[EnhancerSpec, ...] = ()
    aux: Mapping[str, AuxHeadConfig] = field(factory=dict)
    attention: Mapping[str, AttentionSpec] = field(factory=dict, validator=_model_slots)
    init_from: str | None = None  # a run folder, a model.safetensors or a pretrained name to start from
    num_classes: int | None = field(default=None, validator=attrs.validators.optional(gt(0)))
    dropout: float = field(default=0.1, validator=[ge(0.0), lt(1.0)])
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = field(default=IMAGENET_STD, validator=each_positive)  # the model divides by it


@frozen
class RandomSplitConfig:
    """``[data.random_split]``: train and val drawn from one split of the dataset by a seeded permutation, for
    datasets whose release has no usable val split (seed 000's VOC recipe: a 9:1 split of train_aug). Replaces
    ``train_split``/``val_split``; the same seed always gives the same two sets."""

    source: str
    val_fraction: float = field(default=0.1, validator=[gt(0.0), lt(1.0)])
    seed: int = field(default=0, validator=ge(0))


@frozen
class DataConfig:
    """``[data]``: the dataset and how batches are made."""

    dataset: DatasetSpec
    train_split: str = "train"
    val_split: str = "val"
    random_split: RandomSplitConfig | None = None
    batch_size: int = field(default=8, validator=gt(0))
    num_workers: int = field(default=0, validator=ge(0))
    augment: AugmentConfig = AugmentConfig()


def _one_budget(instance: "TrainConfig", attribute: Any, value: Any) -> None:
    if instance.epochs is not None and instance.iters is not None:
        raise ValueError("[train] takes one budget, epochs = N or iters = N, not both")


@frozen
class TrainConfig:
    """``[train]``: optimisation. Budgets and intervals count epochs with ``epochs``, optimizer steps with ``iters``."""

    epochs: int | None = field(default=None, validator=attrs.validators.optional(gt(0)))
    iters: int | None = field(default=None, validator=[attrs.validators.optional(gt(0)), _one_budget])
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = field(default=0.01, validator=gt(0.0))
    momentum: float = field(default=0.9, validator=[ge(0.0), lt(1.0)])
    nesterov: bool = False
    betas: tuple[float, float] = field(default=(0.9, 0.999), validator=fractions_each)  # AdamW's, each in [0, 1)
    weight_decay: float = field(default=5e-4, validator=ge(0.0))
    no_decay_norm_bias: bool = False  # no weight decay on norm layers and biases
    backbone_lr_mult: float = field(default=1.0, validator=ge(0.0))
    layer_decay: float | None = field(default=None, validator=attrs.validators.optional([gt(0.0), le(1.0)]))
    schedule: Literal["poly", "cosine", "step", "constant"] = "poly"
    poly_power: float = field(default=0.9, validator=gt(0.0))
    min_lr_ratio: float = field(default=0.0, validator=[ge(0.0), le(1.0)])  # the schedule ends at lr * this
    # fractions of the budget where "step" multiplies the lr by step_gamma
    step_milestones: tuple[float, ...] = field(default=(), validator=fractions)
    step_gamma: float = field(default=0.1, validator=gt(0.0))
    warmup_iters: int = field(default=0, validator=ge(0))
    warmup_start_ratio: float = field(default=1e-3, validator=[gt(0.0), le(1.0)])
    freeze_backbone: int = field(default=0, validator=ge(0))  # budget units (epochs or iters) with a frozen backbone
    grad_accum_steps: int = field(default=1, validator=gt(0))
    clip_grad_norm: float | None = field(default=None, validator=attrs.validators.optional(gt(0.0)))
    ema_decay: float | None = field(default=None, validator=attrs.validators.optional([gt(0.0), lt(1.0)]))
    amp: Literal["none", "bf16"] = "none"
    channels_last: bool = False
    deterministic: bool = False
    seed: int = field(default=0, validator=ge(0))
    sync_bn: bool = False
    find_unused_parameters: bool = False  # DDP: set when some parameters get no gradient (e.g. unused backbone levels)
    log_every: int = field(default=10, validator=gt(0))  # optimizer steps
    eval_every: int = field(default=0, validator=ge(0))  # budget units; 0: only at the end
    checkpoint_every: int = field(default=1, validator=ge(0))  # budget units; 0: only at the end
    checkpoint_every_iters: int = field(default=0, validator=ge(0))  # extra checkpoints inside epochs
    keep_last: int = field(default=2, validator=gt(0))
    tensorboard: bool = False
    plots: bool = True

    def __attrs_post_init__(self) -> None:
        if self.epochs is None and self.iters is None:  # neither given: the default budget
            object.__setattr__(self, "epochs", 10)


@frozen
class EvalConfig:
    """``[eval]``: how validation and ``task = "evaluate"`` infer (sliding window, multi-scale + flip TTA)."""

    mode: Literal["whole", "slide"] = "whole"
    window: tuple[int, int] = field(default=(512, 512), validator=positive_size)
    stride: tuple[int, int] = field(default=(341, 341), validator=positive_size)
    scales: tuple[float, ...] = field(default=(1.0,), validator=[non_empty, each_positive])
    # evaluate on the image resized to this (H, W) (bilinear), scored at the label's size (seed 000 evaluates
    # Cityscapes at 512x1024 and 1024x2048); None: the image's own size
    resize: tuple[int, int] | None = field(default=None, validator=positive_size)
    flip: bool = False
    batch_size: int = field(default=1, validator=gt(0))
    plots: int = field(default=4, validator=ge(0))  # image/label/prediction rows in the overlay grid
    # the inference fast path (segcore.fastpath) for task = "evaluate"/"predict" and segcore.predict: BatchNorm folded,
    # channels_last, bicubic upsampling as matrix products, bf16 where the hardware has it ("precision"); the
    # training run's own validation keeps train.amp / train.channels_last
    fast: bool = True
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on CPUs with AVX512-BF16/AMX and on CUDA
    compile: bool = False  # torch.compile (inductor, freezing) the first size seen twice; minutes on a CPU
    int8: bool = False  # x86 CPUs: int8 (PT2E + X86InductorQuantizer, needs torchao) for that size, compiled
    calibration_images: int = field(default=8, validator=gt(0))  # training images that calibrate int8


@frozen
class PredictConfig:
    """``[predict]``: a folder of images -> index PNGs and colour overlays."""

    input_dir: str = "images"
    output_dir: str = "predictions"
    overlay_alpha: float = field(default=0.5, validator=[ge(0.0), le(1.0)])


@frozen
class RunConfig:
    """``[run]``: what ``segcore run`` does, where it writes, on which device."""

    task: Literal["train", "evaluate", "predict"] = "train"
    out_dir: str = "runs/default"
    device: str = field(default="auto", validator=lambda _, a, v: _check_device(v))
    input_size: tuple[int, int] = field(default=(512, 512), validator=positive_size)  # what `segcore check` counts MACs at
    checkpoint: str | None = None  # weights to evaluate or predict with (a model.safetensors or a run folder)


def _check_device(value: str) -> None:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
        raise ValueError(f"run.device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {value!r}")


@frozen
class PipelineConfig:
    """A whole pipeline file."""

    model: ModelConfig
    data: DataConfig
    loss: tuple[LossSpec, ...] = ()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    predict: PredictConfig = PredictConfig()
    run: RunConfig = RunConfig()


# -- the converter ------------------------------------------------------------------------------------------------

def _strict(kind: type, accept: tuple[type, ...], what: str):
    def hook(value: Any, _: type) -> Any:
        if isinstance(value, bool) and kind is not bool or not isinstance(value, accept):
            raise TypeError(f"expected {what}, got {value!r} ({type(value).__name__})")
        return kind(value)

    return hook


def make_converter(registry: Registry) -> cattrs.Converter:
    """The converter for pipeline files, with component tables looked up in *registry*."""
    conv = cattrs.Converter(forbid_extra_keys=True)
    # TOML has types: "3" is not an int and 1 is not a bool (cattrs would coerce both).
    conv.register_structure_hook(int, _strict(int, (int,), "an integer"))
    conv.register_structure_hook(float, _strict(float, (int, float), "a number"))
    conv.register_structure_hook(bool, _strict(bool, (bool,), "true or false"))
    conv.register_structure_hook(str, _strict(str, (str,), "a string"))

    def structure_union(value: Any, union: Any) -> Any:
        """``int | tuple[int, ...]`` and the like: the member whose TOML kind (array, table, scalar) the value has."""
        members = [m for m in typing.get_args(union) if m is not type(None)]
        if value is None and len(members) < len(typing.get_args(union)):
            return None
        kind = list if isinstance(value, list) else Mapping if isinstance(value, Mapping) else None
        for m in members:
            origin = typing.get_origin(m) or m
            if kind is list and origin in (tuple, list):
                return conv.structure(value, m)
            if kind is Mapping and (origin in (dict, Mapping) or attrs.has(m)):
                return conv.structure(value, m)
        scalars = [m for m in members if m in (int, float, bool, str)]
        errors = []
        for m in scalars if kind is None else ():
            try:
                return conv.structure(value, m)
            except TypeError as exc:
                errors.append(exc)
        names = " or ".join(getattr(m, "__name__", str(m)) for m in members)
        raise TypeError(f"expected {names}, got {value!r} ({type(value).__name__})")

    def is_mixed_union(t: Any) -> bool:  # cattrs handles Optional[X] itself; this covers scalar-or-array unions
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return typing.get_origin(t) in (typing.Union, types.UnionType) and len(args) > 1

    conv.register_structure_hook_func(is_mixed_union, structure_union)

    def structure_component(value: Any, spec_cls: type[ComponentSpec]) -> ComponentSpec:
        kind = spec_cls.stage.__name__.lower()
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a table like {{ name = \"...\" }} naming a {kind}, got {value!r}")
        installed = ", ".join(e.name for e in registry.entries(spec_cls.stage)) or "none"
        if "name" not in value:
            raise ConfigError(f"missing key 'name': which {kind} to use; installed: {installed}")
        name = value["name"]
        if not isinstance(name, str):
            raise ConfigError(f"name must be a string, got {name!r}; installed: {installed}")
        entry = registry.get(spec_cls.stage, name)
        own = {f.name: f for f in attrs.fields(spec_cls) if f.name not in ("name", "config")}
        errors: list[Exception] = []
        kwargs: dict[str, Any] = {}
        for key, fld in own.items():
            if key not in value:
                continue
            try:
                kwargs[key] = conv.structure(value[key], fld.type)
            except Exception as exc:
                exc.__notes__ = [*getattr(exc, "__notes__", []), AttributeValidationNote(f"@ {key}", key, fld.type)]
                errors.append(exc)
        slots = getattr(entry.cls, "attention_slots", ())
        for slot in kwargs.get("attention", {}):
            if slot not in slots:
                err = ConfigError(
                    f"{kind} {name!r} has no attention slot {slot!r}{did_you_mean(slot, slots)}; "
                    f"its slots: {', '.join(slots) or 'none'}"
                )
                err.__notes__ = [AttributeValidationNote("@ attention", "attention", None)]
                errors.append(err)
        rest = {k: v for k, v in value.items() if k != "name" and k not in own}
        try:
            config = conv.structure(rest, entry.config)
        except ClassValidationError as exc:
            errors.extend(_with_own_keys(e, own) for e in exc.exceptions)
        except Exception as exc:
            errors.append(_with_own_keys(exc, own))
        if errors:
            raise ClassValidationError(f"While structuring {kind} {name!r}", errors, entry.config)
        try:
            return spec_cls(name=name, config=config, **kwargs)
        except ValueError as exc:  # a validator of a core-level key (weight, ...)
            raise ConfigError(str(exc)) from None

    conv.register_structure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, ComponentSpec), structure_component
    )
    return conv


for _cls in (
    AttentionSpec, BackboneSpec, EnhancerSpec, DecoderSpec, LossSpec, DatasetSpec,
    AuxHeadConfig, ModelConfig, RandomSplitConfig, DataConfig, TrainConfig, EvalConfig, PredictConfig, RunConfig, PipelineConfig,
):  # fmt: skip
    attrs.resolve_types(_cls)


# -- error messages -----------------------------------------------------------------------------------------------


def _unknown_keys(keys: Iterable[str], allowed: list[str]) -> str:
    keys = sorted(keys)
    return f"unknown key {', '.join(map(repr, keys))}{did_you_mean(keys[0], allowed)}; allowed: {', '.join(allowed)}"


def _with_own_keys(exc: BaseException, own: Iterable[str]) -> BaseException:
    """An unknown key in a component table: the allowed keys are ``name``, the spec's own keys (``weight``,
    ``attention``, ``in_channels``, ...) and the component's config fields."""
    if not isinstance(exc, ForbiddenExtraKeysError) or not attrs.has(exc.cl):
        return exc
    allowed = ["name", *own, *(a.name for a in attrs.fields(exc.cl))]
    return ConfigError(_unknown_keys(exc.extra_fields, allowed))


def _describe(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, SegcoreError) or (isinstance(exc, (ValueError, TypeError)) and type_ is None):
        return str(exc)
    if isinstance(exc, ForbiddenExtraKeysError):  # a section's table (component tables: _with_own_keys)
        return _unknown_keys(exc.extra_fields, [a.name for a in attrs.fields(exc.cl)] if attrs.has(exc.cl) else [])
    if typing.get_origin(type_) is Literal:
        return f"must be one of {', '.join(map(repr, typing.get_args(type_)))}"
    if isinstance(exc, KeyError):
        return "missing required key"
    if isinstance(type_, type) and attrs.has(type_) and isinstance(exc, (TypeError, AttributeError)):
        return "expected a table of keys, not a single value"
    if isinstance(exc, TypeError) and str(exc).startswith("expected "):
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


def _lookup(raw: Any, path: str) -> tuple[bool, Any]:
    """The raw TOML value at a dotted path like ``loss[0].weight`` (found, value)."""
    node = raw
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            i = int(part[1:-1])
            if not isinstance(node, list) or i >= len(node):
                return False, None
            node = node[i]
        elif isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return False, None
    return True, node


def _format_errors(exc: BaseException, raw: Mapping[str, Any], source: str) -> ConfigError:
    lines = []
    for msg in cattrs.transform_error(exc, path="", format_exception=_describe):
        what, _, where = msg.rpartition(" @ ")
        where = re.sub(r"\['([^']*)'\]", r".\1", where).lstrip(".")
        found, value = _lookup(raw, where)
        if found and not isinstance(value, (Mapping, list)) and "got " not in what:
            what += f" (got {value!r})"
        lines.append(f"  {where or '(top level)'}: {what}")
    return ConfigError(f"{source}: invalid pipeline config\n" + "\n".join(lines))


# -- loading ------------------------------------------------------------------------------------------------------


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; anything else (values, arrays) in *over* replaces *base*'s.

    A component table whose ``name`` changes is replaced whole, since its keys belong to another config class.
    """
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        both = isinstance(old, Mapping) and isinstance(value, Mapping)  # a value over a table replaces it (and fails later)
        if both and ("name" not in value or old.get("name") == value["name"]):
            out[key] = _merge(old, value)
        else:
            out[key] = value
    return out


def read_toml(path: Path, *, registry: Registry, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Parse *path*, resolving ``base = "<preset or file>"`` (a file relative to this one), recursively."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such pipeline file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read pipeline file: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}. See https://toml.io for the syntax.") from None
    return resolve_bases(raw, registry=registry, where=path, _seen=(*_seen, str(path.resolve())))


def resolve_bases(raw: Mapping[str, Any], *, registry: Registry, where: Path | str = "<pipeline>",
                  _seen: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """*raw* merged over its ``base`` (a preset name, or a .toml path relative to *where*), which may have its own."""
    raw = dict(raw)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{where}: base: must be a preset name or a path to a TOML file, got {base!r}")
    if base.endswith(".toml"):
        base_path = (Path(where).parent / base).resolve() if str(where) != "<pipeline>" else Path(base).resolve()
        if str(base_path) in _seen:
            raise ConfigError(f"{where}: base: {base!r} includes itself")
        parent = read_toml(base_path, registry=registry, _seen=_seen)
    else:
        if f"preset:{base}" in _seen:
            raise ConfigError(f"{where}: base: preset {base!r} includes itself")
        try:
            table = registry.preset(base)
        except SegcoreError as exc:
            raise ConfigError(f"{where}: base: {exc}") from None
        parent = resolve_bases(table, registry=registry, where=f"preset {base!r}", _seen=(*_seen, f"preset:{base}"))
    return _merge(parent, raw)


def structure_table(raw: Mapping[str, Any], cls: type, *, registry: Registry, source: str) -> Any:
    """Structure *raw* into *cls* (a pipeline, or one component table); one ConfigError listing every problem."""
    try:
        return make_converter(registry).structure(raw, cls)
    except (cattrs.BaseValidationError, SegcoreError, ValueError, TypeError) as exc:
        raise _format_errors(exc, raw, source) from None


def structure_pipeline(raw: Mapping[str, Any], *, registry: Registry, source: str = "<pipeline>") -> PipelineConfig:
    """Validate a parsed pipeline table whole; raise one ConfigError listing every problem."""
    return structure_table(raw, PipelineConfig, registry=registry, source=source)


def load_pipeline(path: str | Path, *, registry: Registry) -> PipelineConfig:
    """Read, merge its bases and validate pipeline file *path*."""
    raw = read_toml(Path(path), registry=registry)
    return structure_pipeline(raw, registry=registry, source=str(path))


# -- writing back -------------------------------------------------------------------------------------------------


def unstructure(obj: Any) -> Any:
    """A config object as plain TOML values: component tables flattened to ``{name, <own keys>, <config keys>}``,
    tuples as lists, ``None`` left out (TOML has no null; every None here is a default). Reads back equal:
    ``structure_pipeline(unstructure(cfg)) == cfg``."""
    if isinstance(obj, ComponentSpec):
        table = {"name": obj.name}
        for f in attrs.fields(type(obj)):
            if f.name not in ("name", "config"):
                table[f.name] = getattr(obj, f.name)
        table.update(attrs.asdict(obj.config, recurse=False) if attrs.has(type(obj.config)) else {})
        return {k: unstructure(v) for k, v in table.items() if v is not None and v != {}}
    if attrs.has(type(obj)):
        table = {}
        for f in attrs.fields(type(obj)):
            value = getattr(obj, f.name)
            default = f.default.factory() if isinstance(f.default, attrs.Factory) else f.default
            if value is None or (value in ((), {}) and value == default):  # absent from TOML reads back the same
                continue
            table[f.name] = unstructure(value)
        return table
    if isinstance(obj, Mapping):
        return {str(k): unstructure(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (tuple, list)):
        return [unstructure(v) for v in obj]
    return obj


def dump_pipeline(cfg: PipelineConfig) -> str:
    """The resolved pipeline as TOML text (no ``base``: every value explicit)."""
    import tomli_w

    return tomli_w.dumps(unstructure(cfg))
