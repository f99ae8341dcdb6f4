"""Prediction: one image in, one label map out; a folder of images into index PNGs and colour overlays."""

from __future__ import annotations

__all__ = ["output_names", "predict", "predict_folder"]

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from segcore.config.schema import EvalConfig, PredictConfig
from segcore.data.datasets import IMAGE_SUFFIXES, read_image
from segcore.data.images import display_rgb, model_input, to_unit
from segcore.errors import DamagedFileError, DataError
from segcore.engine.inference import fast_model_for
from segcore.io import atomic_write, claim, record
from segcore.model.memory import check_inference_fits
from segcore.contracts.stages import DatasetMeta
from segcore.engine.inference import infer
from segcore.engine.report import colorize


TOO_LARGE_HINT = ("Downscale the image, predict it in windows ([eval] mode = \"slide\", window = [1024, 1024]), or run "
                  "on a device with more memory.")


@torch.no_grad()
def predict(model: nn.Module, image: np.ndarray, *, eval_cfg: EvalConfig = EvalConfig(), device: str | torch.device | None = None) -> np.ndarray:
    """(H, W, C) uint8 or uint16 -> (H, W) int64 class ids at the image's size; C is the model's in_channels (3:
    RGB). The model normalises its input itself, after scaling by its ``max_value`` (else the type's largest).

    Runs the inference fast path (`segcore.inference`: BatchNorm folded, channels_last, bf16 where the hardware has
    it), built once per model and kept while its weights stay the same; ``eval_cfg=EvalConfig(fast=False)`` runs
    the model as it is."""
    channels, max_value = model_input(model)
    if image.ndim != 3 or image.shape[2] != channels or image.dtype not in (np.uint8, np.uint16):
        what = "uint8 RGB (or uint16)" if channels == 3 else "uint8 or uint16"
        raise DataError(f"predict takes an (H, W, {channels}) {what} array (the model's in_channels = {channels}), got "
                        f"{image.shape} {image.dtype}")  # fmt: skip
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = fast_model_for(model, eval_cfg, device=device)
    height, width = image.shape[:2]
    check_inference_fits(model, (1, image.shape[2], height, width), eval_cfg, device, what=f"predicting a {width}x{height} image",
                         hint=TOO_LARGE_HINT)  # fmt: skip
    x = to_unit(torch.as_tensor(np.array(image)).permute(2, 0, 1)[None].to(device), max_value)
    was_training = model.training
    model.eval()
    try:
        return infer(model, x, eval_cfg).argmax(1)[0].cpu().numpy()
    finally:
        model.train(was_training)


LEGACY_MANIFEST = ".segcore-predictions.json"  # what segcore wrote in an output_dir, before `segcore.io.WRITTEN`


def output_names(files: Sequence[Path]) -> list[tuple[str, str]]:
    """(index PNG, overlay PNG) names per input, all distinct: ``<stem>.png`` and ``<stem>_overlay.png``; inputs
    that share a stem (``scene.png``, ``scene.jpg``) keep their suffix (``scene_png.png``, ``scene_jpg.png``), and a
    name already given (``road_overlay.png`` is also ``road.png``'s overlay) moves on to ``_2``, ``_3``, ..."""
    stems = Counter(p.stem for p in files)
    taken: set[str] = set()
    names = []
    for path in files:
        base = path.stem if stems[path.stem] == 1 else f"{path.stem}_{path.suffix[1:].lower()}"
        candidate, n = base, 1
        while f"{candidate}.png" in taken or f"{candidate}_overlay.png" in taken:
            n += 1
            candidate = f"{base}_{n}"
        pair = (f"{candidate}.png", f"{candidate}_overlay.png")
        taken.update(pair)
        names.append(pair)
    return names


def _legacy_written(dst: Path) -> list[str]:
    manifest = dst / LEGACY_MANIFEST
    if not manifest.is_file():
        return []
    try:
        return list(json.loads(manifest.read_text(encoding="utf-8"))["written"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise DamagedFileError(f"{manifest}: damaged ({exc}); delete it only if every PNG beside it is a prediction") from None


def predict_folder(model: nn.Module, cfg: PredictConfig, meta: DatasetMeta, *, eval_cfg: EvalConfig = EvalConfig(),
                   progress: bool = True) -> list[Path]:  # fmt: skip
    """Every image in ``cfg.input_dir`` -> an index PNG (palette PNG whose pixel values are the class ids) and a
    colour overlay (the colours blended over the image) in ``cfg.output_dir``, named by `output_names`. Returns the
    files written, each once."""
    src, dst = Path(cfg.input_dir), Path(cfg.output_dir)
    if not src.is_dir():
        raise DataError(f"predict.input_dir {str(src)!r} is not a folder; point it at a folder of images")
    files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"predict.input_dir {str(src)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if meta.num_classes > 256:
        raise DataError("index PNGs hold at most 256 classes")
    pairs = output_names(files)
    names = [n for pair in pairs for n in pair]
    claim(dst, names, what="predict.output_dir", ours=_legacy_written(dst),
          hint="Choose another (or an empty) predict.output_dir.")  # fmt: skip
    dst.mkdir(parents=True, exist_ok=True)
    record(dst, names)  # before writing: a file cut off by a crash is still segcore's to replace
    flat_palette = [c for rgb in meta.palette for c in rgb]
    channels, max_value = model_input(model)
    written = []
    for path, (index_name, overlay_name) in tqdm(list(zip(files, pairs)), desc="predict", disable=not progress, dynamic_ncols=True):
        image = read_image(path, channels)
        labels = predict(model, image, eval_cfg=eval_cfg)
        index = Image.fromarray(labels.astype(np.uint8), mode="P")
        index.putpalette(flat_palette)
        overlay = (1 - cfg.overlay_alpha) * display_rgb(image, max_value) + cfg.overlay_alpha * colorize(labels, meta.palette, meta.ignore_index)
        for out, im in ((dst / index_name, index), (dst / overlay_name, Image.fromarray(overlay.astype(np.uint8)))):
            with atomic_write(out) as tmp:
                im.save(tmp, format="PNG")
            written.append(out)
    return written
