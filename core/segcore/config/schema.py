"""The pipeline schema: the frozen attrs classes a pipeline file is structured into (no cattrs here: the converter is
`segcore.config.convert`, reading `segcore.config.load`, writing back `segcore.config.dump`).

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
]

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import attrs
from attrs import field, frozen
from attrs.validators import ge, gt, le, lt

from segcore.errors import did_you_mean
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


def _split_names(_: Any, attribute: Any, value: Any) -> None:
    """A split, or a union of splits: a list of distinct names, at least one."""
    if isinstance(value, str):
        return
    if not value:
        raise ValueError(f"'{attribute.name}' is an empty list; name one split or several, e.g. [\"train\", \"val\"]")
    twice = sorted({v for v in value if value.count(v) > 1})
    if twice:
        raise ValueError(f"'{attribute.name}' names {', '.join(map(repr, twice))} twice; each split once")


@frozen
class DataConfig:
    """``[data]``: the dataset and how batches are made. ``train_split`` and ``val_split`` name one split of the
    dataset or a list of them, read as one set (``train_split = ["train", "val"]``: the final model of a recipe
    trained on both)."""

    dataset: DatasetSpec
    train_split: str | tuple[str, ...] = field(default="train", validator=_split_names)
    val_split: str | tuple[str, ...] = field(default="val", validator=_split_names)
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
    # the inference fast path (segcore.inference) for task = "evaluate"/"predict" and segcore.predict: BatchNorm folded,
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


# the annotations are strings (PEP 563): resolve them once, for cattrs (and anyone reading attrs.fields(...).type)
for _cls in (
    AttentionSpec, BackboneSpec, EnhancerSpec, DecoderSpec, LossSpec, DatasetSpec,
    AuxHeadConfig, ModelConfig, RandomSplitConfig, DataConfig, TrainConfig, EvalConfig, PredictConfig, RunConfig, PipelineConfig,
):  # fmt: skip
    attrs.resolve_types(_cls)
