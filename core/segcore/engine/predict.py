"""Prediction: one image in, one label map out; a folder of images into index PNGs and colour overlays."""

from __future__ import annotations

__all__ = ["predict", "predict_folder"]

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from ..config import EvalConfig, PredictConfig
from ..data import read_image
from ..errors import DataError
from ..io import atomic_write
from ..stages import DatasetMeta
from .inference import infer
from .report import colorize

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@torch.no_grad()
def predict(model: nn.Module, image: np.ndarray, *, eval_cfg: EvalConfig = EvalConfig(), device: str | torch.device | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) int64 class ids at the image's size. The model normalises its input itself."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(f"predict takes an (H, W, 3) uint8 RGB array, got {image.shape} {image.dtype}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x = torch.as_tensor(np.array(image)).permute(2, 0, 1)[None].to(device).float().div_(255)
    was_training = model.training
    model.eval()
    try:
        return infer(model, x, eval_cfg).argmax(1)[0].cpu().numpy()
    finally:
        model.train(was_training)


def predict_folder(model: nn.Module, cfg: PredictConfig, meta: DatasetMeta, *, eval_cfg: EvalConfig = EvalConfig(),
                   progress: bool = True) -> list[Path]:  # fmt: skip
    """Every image in ``cfg.input_dir`` -> ``<output_dir>/<stem>.png`` (palette PNG whose pixel values are the
    class ids) and ``<output_dir>/<stem>_overlay.png`` (the colours blended over the image)."""
    src, dst = Path(cfg.input_dir), Path(cfg.output_dir)
    if not src.is_dir():
        raise DataError(f"predict.input_dir {str(src)!r} is not a folder; point it at a folder of images")
    files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"predict.input_dir {str(src)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if meta.num_classes > 256:
        raise DataError("index PNGs hold at most 256 classes")
    flat_palette = [c for rgb in meta.palette for c in rgb]
    written = []
    for path in tqdm(files, desc="predict", disable=not progress, dynamic_ncols=True):
        image = read_image(path)
        labels = predict(model, image, eval_cfg=eval_cfg)
        index = Image.fromarray(labels.astype(np.uint8), mode="P")
        index.putpalette(flat_palette)
        overlay = (1 - cfg.overlay_alpha) * image + cfg.overlay_alpha * colorize(labels, meta.palette, meta.ignore_index)
        for out, im in ((dst / f"{path.stem}.png", index), (dst / f"{path.stem}_overlay.png", Image.fromarray(overlay.astype(np.uint8)))):
            with atomic_write(out) as tmp:
                im.save(tmp, format="PNG")
            written.append(out)
    return written
