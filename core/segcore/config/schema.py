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

# field metadata: a field left out of dumps (pipeline.toml, config.json, cards) while it has its default, so what
# was written before the field existed reads, and compares, the same
OMIT_IF_DEFAULT = "segcore_omit_if_default"

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
    # ColorJitter's brightness strength (kornia's parameters and formulas); 0: off
    brightness: float = field(default=0.0, validator=ge(0.0))
    contrast: float = field(default=0.0, validator=ge(0.0))  # ColorJitter's contrast strength; 0: off
    saturation: float = field(default=0.0, validator=ge(0.0))  # ColorJitter's saturation strength; 0: off
    hue: float = field(default=0.0, validator=[ge(0.0), le(0.5)])  # ColorJitter's hue shift, at most 0.5; 0: off
    jitter_p: float = field(default=1.0, validator=[ge(0.0), le(1.0)])  # probability that a sample is colour-jittered
    # torch.compile the four colour steps: inductor fuses their element-wise kernels, after a one-off compile of
    # several seconds per process; the eager default is already as fast as torchvision (bench/bench_data.py)
    compile: bool = False


@frozen
class ComponentSpec:
    """A component table: ``name`` picks the registered component, the other keys fill its config class.
    ``plugin`` (a plugin or distribution name) says whose component, needed when two plugins register the name."""

    stage: ClassVar[type]
    name: str
    config: Any
    plugin: str | None = None


@frozen
class AttentionSpec(ComponentSpec):
    """An attention slot's table: ``[model.attention.SLOT]``, ``[model.decoder.attention.SLOT]``, an enhancer's
    ``attention.SLOT``; ``name`` picks the Attention that fills the slot."""

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

    # slot name -> the Attention that fills it (the component's attention_slots); empty: identity
    attention: Mapping[str, AttentionSpec] = field(factory=dict)
    # the channels per input level this stage expects, checked against the stage before it
    in_channels: tuple[int, ...] | None = None
    # the strides per input level this stage expects, checked against the stage before it
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
    same name). ``start_iter``: the training step from which the table counts (before it its weight is 0, for every
    term the loss returns, and it is still computed and logged, which keeps every head in the graph for DDP): a term
    that needs a trained model first, as ContrastiveSeg's contrastive loss after its warm-up."""

    stage = Loss
    weight: float = field(default=1.0, validator=ge(0.0))
    start_iter: int = field(default=0, validator=ge(0))  # the training step it counts from (weight 0 before it)
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

    decoder: DecoderSpec  # the head: any registered decoder, as a [model.decoder] table
    source: Literal["backbone", "decoder"] = "backbone"
    output: Literal["logits", "extra"] = "logits"
    in_index: tuple[int, ...] | None = None
    weight: float = field(default=AUX_WEIGHT, validator=ge(0.0))
    # dropout before the head's 1x1 classifier (output = "logits")
    dropout: float = field(default=0.1, validator=[ge(0.0), lt(1.0)])


def _model_slots(_: Any, attribute: Any, value: Mapping[str, Any]) -> None:
    bad = [k for k in value if k not in MODEL_SLOTS]
    if bad:
        raise ValueError(f"[model.attention] has no slot {bad[0]!r}{did_you_mean(bad[0], MODEL_SLOTS)}; the model's slots: "
                         f"{', '.join(MODEL_SLOTS)}")


MODEL_SLOTS = ("final_upsample",)  # after the logits are resized to the input size


def _per_channel(instance: Any, attribute: Any, value: tuple[float, ...]) -> None:
    """``[model] mean`` and ``std``: one value per input channel."""
    if len(value) != instance.in_channels:
        rgb = " (the ImageNet RGB default)" if tuple(value) in (IMAGENET_MEAN, IMAGENET_STD) else ""
        raise ValueError(f"[model] {attribute.name} has {len(value)} values{rgb} but [model] in_channels = "
                         f"{instance.in_channels}: give one per channel, {attribute.name} = [{', '.join(['...'] * instance.in_channels)}] "
                         "(your images' per-channel statistics, scaled to [0, 1])")  # fmt: skip


@frozen
class ModelConfig:
    """``[model]``: the stages, the classifier's dropout and the input normalisation."""

    backbone: BackboneSpec  # makes the feature maps, finest first
    decoder: DecoderSpec  # fuses the maps into the features the 1x1 classifier reads
    # modules between backbone and decoder, in order (e.g. a context module on the top level)
    enhancers: tuple[EnhancerSpec, ...] = ()
    # training-only heads by name: auxiliary logits, or extra tensors for the losses
    aux: Mapping[str, AuxHeadConfig] = field(factory=dict)
    # the model's own attention slots: final_upsample (after the logits reach the input size)
    attention: Mapping[str, AttentionSpec] = field(factory=dict, validator=_model_slots)
    init_from: str | None = None  # a run folder, a model.safetensors or a pretrained name to start from
    # the classifier's class count; not set: the dataset's
    num_classes: int | None = field(default=None, validator=attrs.validators.optional(gt(0)))
    dropout: float = field(default=0.1, validator=[ge(0.0), lt(1.0)])  # dropout before the 1x1 classifier
    # channels of the input images (3: RGB; 4: RGB + near infrared, ...); the backbone is built for them
    in_channels: int = field(default=3, validator=gt(0), metadata={OMIT_IF_DEFAULT: True})
    # per-channel mean the model subtracts from images scaled to [0, 1], one per channel (part of the saved model)
    mean: tuple[float, ...] = field(default=IMAGENET_MEAN, validator=_per_channel)
    # per-channel std the model divides by, one per channel
    std: tuple[float, ...] = field(default=IMAGENET_STD, validator=[each_positive, _per_channel])
    # the pixel value read as 1.0 (4095: 12-bit data in 16-bit files); None: the image type's largest value, 255 for
    # 8-bit and 65535 for 16-bit images (train, eval, predict and export scale by the same)
    max_value: float | None = field(default=None, validator=attrs.validators.optional(gt(0.0)))


@frozen
class RandomSplitConfig:
    """``[data.random_split]``: train and val drawn from one split of the dataset by a seeded permutation, for
    datasets whose release has no usable val split (seed 000's VOC recipe: a 9:1 split of train_aug). Replaces
    ``train_split``/``val_split``; the same seed always gives the same two sets."""

    source: str  # the split both sets are drawn from
    val_fraction: float = field(default=0.1, validator=[gt(0.0), lt(1.0)])  # the share of it that becomes val
    seed: int = field(default=0, validator=ge(0))  # seed of the permutation


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

    dataset: DatasetSpec  # the dataset component
    train_split: str | tuple[str, ...] = field(default="train", validator=_split_names)
    val_split: str | tuple[str, ...] = field(default="val", validator=_split_names)
    # train and val drawn from one split (replaces train_split and val_split)
    random_split: RandomSplitConfig | None = None
    batch_size: int = field(default=8, validator=gt(0))  # training batch size (per process when distributed)
    num_workers: int = field(default=0, validator=ge(0))  # worker processes that decode samples; 0: the main process
    augment: AugmentConfig = AugmentConfig()  # the training augmentation, on whole batches on the device
    # only the first N samples of the training set and of the validation set: a quick run, or the sanity run of
    # `segcore run --overfit N` (which also evaluates on the training split); None: every sample
    subset: int | None = field(default=None, validator=attrs.validators.optional(gt(0)))


def _one_budget(instance: "TrainConfig", attribute: Any, value: Any) -> None:
    if instance.epochs is not None and instance.iters is not None:
        raise ValueError("[train] takes one budget, epochs = N or iters = N, not both")


@frozen
class TrainConfig:
    """``[train]``: optimisation. Budgets and intervals count epochs with ``epochs``, optimizer steps with ``iters``."""

    epochs: int | None = field(default=None, validator=attrs.validators.optional(gt(0)))
    iters: int | None = field(default=None, validator=[attrs.validators.optional(gt(0)), _one_budget])
    optimizer: Literal["sgd", "adamw"] = "sgd"  # SGD (momentum, nesterov) or AdamW (betas)
    lr: float = field(default=0.01, validator=gt(0.0))  # base learning rate
    momentum: float = field(default=0.9, validator=[ge(0.0), lt(1.0)])  # SGD's momentum
    nesterov: bool = False  # SGD with Nesterov momentum
    betas: tuple[float, float] = field(default=(0.9, 0.999), validator=fractions_each)  # AdamW's, each in [0, 1)
    weight_decay: float = field(default=5e-4, validator=ge(0.0))  # SGD: L2 penalty; AdamW: decoupled decay
    no_decay_norm_bias: bool = False  # no weight decay on norm layers and biases
    backbone_lr_mult: float = field(default=1.0, validator=ge(0.0))  # the backbone's learning rate is lr times this
    # layer-wise lr decay over a transformer backbone's blocks; not set: none
    layer_decay: float | None = field(default=None, validator=attrs.validators.optional([gt(0.0), le(1.0)]))
    schedule: Literal["poly", "cosine", "step", "constant"] = "poly"  # the learning-rate schedule after warm-up
    poly_power: float = field(default=0.9, validator=gt(0.0))  # exponent of the poly schedule
    min_lr_ratio: float = field(default=0.0, validator=[ge(0.0), le(1.0)])  # the schedule ends at lr * this
    # fractions of the budget where "step" multiplies the lr by step_gamma
    step_milestones: tuple[float, ...] = field(default=(), validator=fractions)
    step_gamma: float = field(default=0.1, validator=gt(0.0))  # lr factor at each of step_milestones
    warmup_iters: int = field(default=0, validator=ge(0))  # optimizer steps of linear warm-up
    warmup_start_ratio: float = field(default=1e-3, validator=[gt(0.0), le(1.0)])  # warm-up starts at lr times this
    freeze_backbone: int = field(default=0, validator=ge(0))  # budget units (epochs or iters) with a frozen backbone
    grad_accum_steps: int = field(default=1, validator=gt(0))  # batches whose gradients add up to one optimizer step
    # clip the gradients' global norm to this; not set: no clipping
    clip_grad_norm: float | None = field(default=None, validator=attrs.validators.optional(gt(0.0)))
    # keep an exponential moving average of the weights with this decay; not set: none
    ema_decay: float | None = field(default=None, validator=attrs.validators.optional([gt(0.0), lt(1.0)]))
    # ramp the EMA's decay up from 0 (timm's ModelEmaV3 warm-up: 1 - (1 + step)^(-2/3), capped at ema_decay), so that
    # a run shorter than the decay's horizon does not average in its untrained first weights (0.998 ** 520 = 0.35)
    ema_warmup: bool = False
    # bf16 autocast in training and its evaluations; "auto": bf16 where the device computes it natively (CUDA with
    # bf16, a CPU with AVX512-BF16 or AMX), else fp32 (elsewhere PyTorch emulates bf16, several times slower)
    amp: Literal["auto", "none", "bf16"] = "none"
    channels_last: bool = False  # train in the channels_last memory format
    # torch.compile (inductor) the model being trained: fuses the element-wise work around convolutions (BatchNorm,
    # ReLU, additions) in forward and backward; a one-off compile of minutes on a CPU, for long runs
    compile: bool = False
    # the optimizer's implementation: "fused" (one kernel over all parameters, CPU and CUDA), "foreach" (batched
    # per-tensor ops), "loop" (one parameter at a time), "auto" (torch's choice: loop on the CPU, foreach on CUDA)
    optimizer_impl: Literal["auto", "fused", "foreach", "loop"] = "auto"
    # compute the model's bicubic upsampling places as banded matrix products (the inference fast path's resize),
    # forward and backward: the same values to float rounding, several times faster on CPUs, where PyTorch's bicubic
    # kernel and its backward are not vectorized (HRNet_L-W18 at 352x480: 4.05 -> 3.58 s a step)
    fast_resize: bool = False
    # compute the model's dilated depthwise convolutions (VAN's large-kernel attention: 7x7, dilation 3) as undilated
    # ones on the map's interleaved sub-grids (`segcore.inference.dilated`), forward and backward: the same values to
    # float rounding; on CPUs several times faster, where oneDNN runs dilated depthwise convolutions as im2col + GEMM
    fast_dilated: bool = False
    deterministic: bool = False  # deterministic algorithms: a resumed run is bitwise equal (same thread count)
    seed: int = field(default=0, validator=ge(0))  # seeds initialisation, sample order and augmentation
    sync_bn: bool = False  # SyncBatchNorm across processes (CUDA only)
    find_unused_parameters: bool = False  # DDP: set when some parameters get no gradient (e.g. unused backbone levels)
    log_every: int = field(default=10, validator=gt(0))  # optimizer steps
    eval_every: int = field(default=0, validator=ge(0))  # budget units; 0: only at the end
    # budget units; None: at the end of every epoch (with an iters budget too: every epoch's worth of steps, not
    # every step); 0: only at the end
    checkpoint_every: int | None = field(default=None, validator=attrs.validators.optional(ge(0)))
    checkpoint_every_iters: int = field(default=0, validator=ge(0))  # extra checkpoints inside epochs
    keep_last: int = field(default=2, validator=gt(0))  # checkpoints kept in checkpoints/
    tensorboard: bool = False  # also log to TensorBoard (needs the tensorboard package)
    plots: bool = True  # write plots/ at the end (curves, per-class IoU, confusion matrix, overlays)
    # stop once an evaluation's val mIoU (a fraction: 0.99) reaches this, before the budget ends; None: never
    stop_at_miou: float | None = field(default=None, validator=attrs.validators.optional([gt(0.0), le(1.0)]))

    def __attrs_post_init__(self) -> None:
        if self.epochs is None and self.iters is None:  # neither given: the default budget
            object.__setattr__(self, "epochs", 10)


@frozen
class EvalConfig:
    """``[eval]``: how validation and ``task = "evaluate"`` infer (sliding window, multi-scale + flip TTA)."""

    mode: Literal["whole", "slide"] = "whole"  # the whole image at once, or a sliding window
    # (H, W) of the sliding window (mode = "slide")
    window: tuple[int, int] = field(default=(512, 512), validator=positive_size)
    stride: tuple[int, int] = field(default=(341, 341), validator=positive_size)  # (H, W) step of the sliding window
    # test-time scales whose predictions are averaged
    scales: tuple[float, ...] = field(default=(1.0,), validator=[non_empty, each_positive])
    # evaluate on the image resized to this (H, W) (bilinear), scored at the label's size (seed 000 evaluates
    # Cityscapes at 512x1024 and 1024x2048); None: the image's own size
    resize: tuple[int, int] | None = field(default=None, validator=positive_size)
    flip: bool = False  # also infer the horizontally flipped image and average
    batch_size: int = field(default=1, validator=gt(0))  # evaluation batch size
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

    input_dir: str = "images"  # the folder of images to predict
    output_dir: str = "predictions"  # where <stem>.png (class ids) and <stem>_overlay.png are written
    overlay_alpha: float = field(default=0.5, validator=[ge(0.0), le(1.0)])  # opacity of the colour overlay


@frozen
class RunConfig:
    """``[run]``: what ``segcore run`` does, where it writes, on which device."""

    # train; evaluate run.checkpoint on the val split; or predict [predict] input_dir
    task: Literal["train", "evaluate", "predict"] = "train"
    out_dir: str = "runs/default"  # the run folder
    # "auto" (CUDA when available, else the CPU), "cpu", "cuda", "cuda:N" or "mps"
    device: str = field(default="auto", validator=lambda _, a, v: _check_device(v))
    input_size: tuple[int, int] = field(default=(512, 512), validator=positive_size)  # what `segcore check` counts MACs at
    checkpoint: str | None = None  # weights to evaluate or predict with (a model.safetensors or a run folder)


def _check_device(value: str) -> None:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
        raise ValueError(f"run.device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {value!r}")


def _jitter_needs_rgb(model: ModelConfig, data: DataConfig) -> None:
    """Colour jitter mixes the channels as RGB (saturation, hue, contrast's grey): only for 3-channel images."""
    aug = data.augment
    on = [k for k in ("brightness", "contrast", "saturation", "hue") if getattr(aug, k)]
    if on and model.in_channels != 3:
        raise ValueError(f"data.augment.{on[0]} = {getattr(aug, on[0])}: colour jitter works on RGB images, but [model] "
                         f"in_channels = {model.in_channels}; set {' and '.join(f'data.augment.{k} = 0' for k in on)} "
                         "(or use 3-channel RGB images)")  # fmt: skip


@frozen
class PipelineConfig:
    """A whole pipeline file."""

    model: ModelConfig  # the network: stages, classifier, input normalisation
    # the dataset, its splits, batching and augmentation
    data: DataConfig = field(validator=lambda cfg, _, data: _jitter_needs_rgb(cfg.model, data))
    loss: tuple[LossSpec, ...] = ()  # the losses, summed with their weights (one [[loss]] table each)
    train: TrainConfig = TrainConfig()  # optimisation: budget, optimizer, schedule, precision, checkpoints
    eval: EvalConfig = EvalConfig()  # how validation and task = "evaluate" infer
    predict: PredictConfig = PredictConfig()  # task = "predict": the input folder and the outputs
    run: RunConfig = RunConfig()  # what `segcore run` does, where it writes, on which device


# the annotations are strings (PEP 563): resolve them once, for cattrs (and anyone reading attrs.fields(...).type)
for _cls in (
    AttentionSpec, BackboneSpec, EnhancerSpec, DecoderSpec, LossSpec, DatasetSpec,
    AuxHeadConfig, ModelConfig, RandomSplitConfig, DataConfig, TrainConfig, EvalConfig, PredictConfig, RunConfig, PipelineConfig,
):  # fmt: skip
    attrs.resolve_types(_cls)
