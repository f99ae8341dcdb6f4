"""Any number of input channels (#21): [model] in_channels with per-channel mean and std, backbones wired with the
channel count (RGB-only ones refused by name), multi-channel and 16-bit folder datasets through train, predict, the
model folder and ONNX export, RGB timm weights adapted to 4 channels, and the configs that cannot work refused."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import attrs
import numpy as np
import pytest
import safetensors.torch
import tomli_w
import torch
from PIL import Image

from segcore import Backbone, ConfigError, DataError, FeatureInfo, from_pretrained, predict, save_pretrained
from segcore.cli.main import main
from segcore.config import load_pipeline
from segcore.contracts import Registry
from segcore.data.datasets import read_image
from segcore.engine.run import run_pipeline
from segcore.model.build import build_model, init_from
from segcore.model.weights import save_weights

tifffile = pytest.importorskip("tifffile")
SIZE = (32, 32)


def _sample(rng: np.random.Generator, channels: int, top: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, C) image and (H, W) mask: class 1 is a box bright in the last channel only (so a model must read it)."""
    mask = np.zeros(SIZE, np.uint8)
    y, x = rng.integers(4, 16, 2)
    mask[y : y + 12, x : x + 12] = 1
    image = rng.uniform(0.2, 0.4, (*SIZE, channels))
    image[..., -1] += 0.5 * mask
    return np.round(image * top).astype(np.uint16 if top > 255 else np.uint8), mask


def _folder(root: Path, *, channels: int, top: int, planar: bool) -> Path:
    """images/{split}/*.tif and masks/{split}/*.png: 4 training and 2 validation samples."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(count):
            image, mask = _sample(rng, channels, top)
            if planar:  # (C, H, W) planes, as multispectral exports often store them
                tifffile.imwrite(root / "images" / split / f"{i}.tif", np.moveaxis(image, -1, 0),
                                 photometric="minisblack", planarconfig="separate")  # fmt: skip
            else:
                tifffile.imwrite(root / "images" / split / f"{i}.tif", image, photometric="minisblack", planarconfig="contig")
            Image.fromarray(mask).save(root / "masks" / split / f"{i}.png")
    return root


def _pipeline(root: Path, out: Path, *, channels: int, max_value: float | None = None) -> dict:
    """tests/data/small.toml (test_resnet + a one-conv FCN, 4 steps) on the folder dataset at *root*."""
    table = tomllib.loads((Path(__file__).parent / "data" / "small.toml").read_text())
    table["model"] |= {"in_channels": channels, "mean": [0.4] * channels, "std": [0.2] * channels}
    if max_value is not None:
        table["model"]["max_value"] = max_value
    table["data"]["dataset"] = {"name": "folder", "root": str(root), "class_names": ["background", "box"],
                                "image_suffix": ".tif", "channels": channels}  # fmt: skip
    table["run"]["out_dir"] = str(out)
    return table


def _write(path: Path, table: dict) -> Path:
    path.write_text(tomli_w.dumps(table))
    return path


# -- a 4-channel and a 16-bit dataset, end to end ------------------------------------------------------------------


@pytest.mark.parametrize("channels, top, max_value, planar", [
    (4, 255, None, True),  # RGB + near infrared, 8-bit, planar TIFF
    (3, 4095, 4095.0, False),  # 12-bit data in 16-bit TIFF files: [model] max_value = 4095
], ids=["4ch-uint8", "16bit-tiff"])  # fmt: skip
@pytest.mark.slow  # ~12 s each: trains, predicts and exports on 2 idle AVX2 cores
def test_folder_dataset_trains_predicts_saves_and_exports(tmp_path, registry, channels, top, max_value, planar):
    root = _folder(tmp_path / "data", channels=channels, top=top, planar=planar)
    table = _pipeline(root, tmp_path / "run", channels=channels, max_value=max_value)
    cfg = load_pipeline(_write(tmp_path / "pipeline.toml", table), registry=registry)

    # the sample carries the file's type; the model gets it scaled by max_value (else the type's largest)
    from segcore.data.datasets import build_split

    sample = build_split(cfg.data, registry, "train")[0]
    assert sample["image"].dtype == (torch.uint16 if top > 255 else torch.uint8)
    assert tuple(sample["image"].shape) == (channels, *SIZE)

    result = run_pipeline(cfg, registry, progress=False)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["step"] == 4  # small.toml's 4 steps, evaluated
    assert len(result.metrics["IoU"]) == 2 and result.metrics["mIoU"] == pytest.approx(np.nanmean(result.metrics["IoU"]))
    assert (tmp_path / "run" / "model.safetensors").is_file()

    # predict: task = "predict" from the run folder, on the validation images
    table["run"] |= {"task": "predict", "checkpoint": str(tmp_path / "run")}
    table["predict"] = {"input_dir": str(root / "images" / "val"), "output_dir": str(tmp_path / "pred")}
    written = run_pipeline(load_pipeline(_write(tmp_path / "predict.toml", table), registry=registry), registry,
                           progress=False)  # fmt: skip
    assert sorted(p.name for p in written) == ["0.png", "0_overlay.png", "1.png", "1_overlay.png"]
    labels = np.asarray(Image.open(tmp_path / "pred" / "0.png"))
    assert labels.shape == SIZE and set(np.unique(labels)) <= {0, 1}
    assert np.asarray(Image.open(tmp_path / "pred" / "0_overlay.png")).shape == (*SIZE, 3)

    # the model folder records the channels and the normalisation, and loads back with them
    from segcore.hub.sources import resolve_source
    from segcore.engine.run import load_model_weights

    model = build_model(cfg.model, registry, num_classes=2)
    load_model_weights(model, str(tmp_path / "run"), what="test", registry=registry)
    model.eval()
    folder = save_pretrained(model, tmp_path / "folder", meta=build_split(cfg.data, registry, "val").meta)
    config = json.loads((folder / "config.json").read_text())
    assert config["model"].get("in_channels", 3) == channels  # left out at its default: older folders read the same
    assert config["model"]["mean"] == [0.4] * channels and config["model"]["std"] == [0.2] * channels
    assert config["model"].get("max_value") == max_value
    loaded = from_pretrained(str(folder))
    assert (loaded.in_channels, loaded.max_value) == (channels, max_value)
    image = read_image(root / "images" / "val" / "0.tif", channels)
    exact = predict(loaded, image, eval_cfg=attrs.evolve(cfg.eval, fast=False))
    np.testing.assert_array_equal(exact, predict(model, image, eval_cfg=attrs.evolve(cfg.eval, fast=False)))
    assert resolve_source(str(folder), what="test").has_config

    # ONNX: C input channels, parity with PyTorch on the dataset's own images, the normalisation in its metadata
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnx

    from segcore.inference.onnx import check_onnx, export_onnx, parity_images

    onnx_path = export_onnx(model, tmp_path / "model.onnx", example_size=SIZE)
    graph = onnx.load(str(onnx_path), load_external_data=False)
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == channels
    props = {p.key: p.value for p in graph.metadata_props}
    assert props["segcore.in_channels"] == str(channels)
    assert props["segcore.max_value"] == ("" if max_value is None else repr(max_value))
    assert props["segcore.mean"] == ",".join(["0.4"] * channels)
    images, _ = parity_images(cfg, registry, count=2)
    assert images[0].dtype == sample["image"].dtype and images[0].shape[0] == channels
    check = check_onnx(onnx_path, model, images, repeats=1)
    assert check.max_abs_diff < 1e-4 * max(1.0, check.max_abs_logit)
    assert check.agreement >= 0.999


def test_16bit_png_keeps_its_bits(tmp_path):
    values = (np.arange(24 * 32).reshape(24, 32) * 80).astype(np.uint16)  # up to 61360: needs 16 bits
    Image.fromarray(values).save(tmp_path / "a.png")
    grey = read_image(tmp_path / "a.png", 1)
    assert grey.dtype == np.uint16 and grey.shape == (24, 32, 1)
    np.testing.assert_array_equal(grey[..., 0], values)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png", 3), np.repeat(grey, 3, axis=-1))  # grey as RGB
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match=r"rgb.png: image has 3 channels, but the dataset reads 4"):
        read_image(tmp_path / "rgb.png", 4)


def test_to_unit_scales_by_the_type_or_max_value():
    from segcore.data.images import to_unit

    assert to_unit(torch.tensor([255], dtype=torch.uint8)).item() == 1.0
    assert to_unit(torch.tensor([65535], dtype=torch.uint16)).item() == 1.0
    assert to_unit(torch.tensor([4095], dtype=torch.uint16), 4095).item() == 1.0


# -- RGB weights adapted to 4 channels ------------------------------------------------------------------------------


MODEL_4CH = {"backbone": {"name": "timm", "model_name": "test_resnet"}, "decoder": {"name": "fcn", "channels": 8},
             "in_channels": 4, "mean": [0.5] * 4, "std": [0.25] * 4}  # fmt: skip


def _model_cfg(registry, table):
    from segcore.config import structure_table
    from segcore.config.schema import ModelConfig

    return structure_table(table, ModelConfig, registry=registry, source="test [model]")


def test_a_3_channel_timm_weight_file_adapts_to_4_channels(tmp_path, registry):
    import timm
    from timm.models import adapt_input_conv

    rgb = timm.create_model("test_resnet", pretrained=False)
    file = tmp_path / "test_resnet.safetensors"
    safetensors.torch.save_file(rgb.state_dict(), file)
    cfg = _model_cfg(registry, {**MODEL_4CH, "backbone": {**MODEL_4CH["backbone"], "weights": str(file)}})
    model = build_model(cfg, registry, num_classes=3)
    stem = model.backbone.model.conv1[0].weight  # test_resnet's deep stem: its first convolution
    assert stem.shape[1] == 4
    torch.testing.assert_close(stem, adapt_input_conv(4, rgb.conv1[0].weight))  # timm's own adaptation
    torch.testing.assert_close(model.backbone.model.layer1[0].conv1.weight, rgb.layer1[0].conv1.weight)
    assert model(torch.rand(2, 4, 40, 48)).logits.shape == (2, 3, 40, 48)


def test_init_from_an_rgb_model_adapts_its_input_convolution(tmp_path, registry):
    from timm.models import adapt_input_conv

    rgb = build_model(_model_cfg(registry, {k: v for k, v in MODEL_4CH.items() if k not in ("in_channels", "mean", "std")}),
                      registry, num_classes=3)  # fmt: skip
    save_weights(rgb, tmp_path / "rgb.safetensors")
    four = build_model(_model_cfg(registry, MODEL_4CH), registry, num_classes=3)
    assert init_from(four, tmp_path / "rgb.safetensors") == []
    key = "backbone.model.conv1.0.weight"
    torch.testing.assert_close(four.state_dict()[key], adapt_input_conv(4, rgb.state_dict()[key]))
    torch.testing.assert_close(four.classifier.weight, rgb.classifier.weight)


# -- what cannot work is refused, naming the key and the fix --------------------------------------------------------


def _cli_check(tmp_path, capsys, table: dict) -> str:
    assert main(["check", str(_write(tmp_path / "bad.toml", table))]) == 2
    return capsys.readouterr().err


def test_mean_of_3_with_in_channels_4_is_refused(tmp_path, capsys):
    table = _pipeline(tmp_path, tmp_path / "run", channels=4)
    table["model"]["mean"] = [0.4] * 3
    err = _cli_check(tmp_path, capsys, table)
    assert "[model] mean has 3 values but [model] in_channels = 4: give one per channel" in err
    del table["model"]["mean"]
    assert "[model] mean has 3 values (the ImageNet RGB default)" in _cli_check(tmp_path, capsys, table)


def test_colour_jitter_on_4_channels_is_refused(tmp_path, capsys):
    table = _pipeline(tmp_path, tmp_path / "run", channels=4)
    table["data"]["augment"] = {"saturation": 0.2, "hue": 0.1}
    err = _cli_check(tmp_path, capsys, table)
    assert ("data.augment.saturation = 0.2: colour jitter works on RGB images, but [model] in_channels = 4; set "
            "data.augment.saturation = 0 and data.augment.hue = 0") in err


@attrs.frozen
class _RGBOnlyConfig:
    pass


class _RGBOnly(Backbone):
    def __init__(self, cfg: _RGBOnlyConfig) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.feature_info = (FeatureInfo(8, 4),)

    def forward(self, image):
        return [self.conv(image)]


def test_a_backbone_that_cannot_take_in_channels_is_refused_by_name(registry):
    mine = Registry()
    for entry in registry.entries():
        if entry.name == "fcn":
            mine.add(entry.cls, name=entry.name, config=entry.config)
    mine.add(_RGBOnly, name="rgb_only", config=_RGBOnlyConfig)
    table = {"backbone": {"name": "rgb_only"}, "decoder": {"name": "fcn", "channels": 8}}
    assert build_model(_model_cfg(mine, table), mine, num_classes=2).in_channels == 3  # RGB: builds as ever
    with pytest.raises(ConfigError, match=r"\[model\] in_channels = 4: \[model.backbone\] backbone 'rgb_only' .* takes "
                                          r"only 3-channel \(RGB\) images: _RGBOnly's constructor has no in_channels "
                                          r"keyword. Use a backbone that takes it"):  # fmt: skip
        build_model(_model_cfg(mine, {**table, "in_channels": 4, "mean": [0.5] * 4, "std": [0.2] * 4}), mine, num_classes=2)


def test_data_with_other_channels_than_the_model_is_refused(tmp_path, registry):
    from segcore.engine.trainer import Trainer

    root = _folder(tmp_path / "data", channels=4, top=255, planar=False)
    table = _pipeline(root, tmp_path / "run", channels=4)
    table["model"] |= {"in_channels": 3, "mean": [0.4] * 3, "std": [0.2] * 3}
    path = _write(tmp_path / "p.toml", table)
    with pytest.raises(ConfigError, match=r"\[data.dataset\] \('folder'\) gives 4-channel images but \[model\] "
                                          r"in_channels = 3: set \[model\] in_channels = 4"):  # fmt: skip
        Trainer.from_config(load_pipeline(path, registry=registry), registry, progress=False)


def test_predict_refuses_an_array_of_other_channels(registry):
    model = build_model(_model_cfg(registry, MODEL_4CH), registry, num_classes=2).eval()
    with pytest.raises(DataError, match=r"predict takes an \(H, W, 4\) uint8 or uint16 array \(the model's "
                                        r"in_channels = 4\), got \(32, 32, 3\) uint8"):  # fmt: skip
        predict(model, np.zeros((32, 32, 3), np.uint8))


def test_a_model_folder_without_the_fields_is_rgb_8bit(tmp_path, registry):
    from segcore.contracts.stages import DatasetMeta

    rgb = {k: v for k, v in MODEL_4CH.items() if k not in ("in_channels", "mean", "std")}
    model = build_model(_model_cfg(registry, rgb), registry, num_classes=2).eval()
    folder = save_pretrained(model, tmp_path / "old", meta=DatasetMeta(("a", "b"), ((0, 0, 0), (255, 0, 0))))
    config = json.loads((folder / "config.json").read_text())
    for key in ("in_channels", "mean", "std", "max_value"):  # as a folder saved before they existed
        config["model"].pop(key, None)
    (folder / "config.json").write_text(json.dumps(config))
    loaded = from_pretrained(str(folder))
    assert (loaded.in_channels, loaded.max_value) == (3, None)
    torch.testing.assert_close(loaded.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(predict(loaded, image), predict(model, image))
