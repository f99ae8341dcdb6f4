"""Images of any channel count and bit depth: decoding (PIL; tifffile for TIFF), scaling to [0, 1], display.

Samples carry images as stored, ``(C, H, W)`` uint8 or uint16; train, eval, predict and export turn them into the
model's float input with `to_unit`, by ``[model] max_value`` or else the type's largest value (255, 65535).
"""

from __future__ import annotations

__all__ = ["decode_image", "display_rgb", "match_channels", "model_input", "to_unit", "type_max"]

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from segcore.errors import DataError

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")  # PIL's 16-bit greyscale modes (16-bit PNGs open as I;16)
_KEEP = ("L", "LA", "RGB", "RGBA", "CMYK")  # PIL modes read as they are stored when the channels are not RGB


def type_max(dtype: torch.dtype | np.dtype) -> int:
    """The largest value of an image type: 255 for uint8, 65535 for uint16 (what 1.0 means without max_value)."""
    name = str(dtype).removeprefix("torch.")
    if name == "uint8":
        return 255
    if name == "uint16":
        return 65535
    raise DataError(f"images are 8- or 16-bit unsigned integers, got {dtype}")


def to_unit(image: Tensor, max_value: float | None = None) -> Tensor:
    """An integer image (any shape) -> float32 in [0, 1]: divided by *max_value* (``[model] max_value``), or by its
    type's largest value (255 for uint8, 65535 for uint16); a float image is taken as scaled already."""
    if image.is_floating_point():
        return image.float()
    return image.float().div_(max_value or type_max(image.dtype))


def display_rgb(image: np.ndarray, max_value: float | None = None) -> np.ndarray:
    """(H, W, C) uint8/uint16 -> (H, W, 3) uint8 to look at (overlays): the first three channels (one repeated),
    scaled like `to_unit`."""
    scale = max_value or type_max(image.dtype)
    rgb = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image[..., :1], 3, axis=-1)
    return np.clip(rgb.astype(np.float32) * (255.0 / scale), 0, 255).round().astype(np.uint8)


def _tiff(path: Path) -> np.ndarray:
    """A TIFF's first image as (H, W, C), channels last whichever way the file stores them."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array, axes = series.asarray(), series.axes
    if array.ndim == 2:
        return array[..., None]
    if array.ndim == 3 and axes.find("Y") == 1 and axes.find("X") == 2:  # planar: CYX, SYX
        return np.moveaxis(array, 0, -1)
    if array.ndim == 3:  # YXS
        return array
    raise DataError(f"{path}: TIFF of shape {array.shape} (axes {axes}); segcore reads one 2-d image of one or more "
                    "channels per file (YX, YXS or CYX): save each image to its own file")  # fmt: skip


def _pil(path: Path, rgb: bool) -> np.ndarray:
    with Image.open(path) as im:
        im.load()
        if im.mode in _SIXTEEN_BIT or im.mode == "I":
            array = np.asarray(im)
            if im.mode == "I" and (array.min(initial=0) < 0 or array.max(initial=0) > 65535):
                raise DataError(f"{path}: 32-bit integer image with values {array.min()}..{array.max()}; segcore "
                                "reads 8- and 16-bit images (0..65535)")  # fmt: skip
            return array.astype(np.uint16)[..., None]
        if rgb:  # 8-bit images for an RGB model: every mode (greyscale, palette, RGBA, CMYK) as RGB
            return np.asarray(im.convert("RGB"))
        if im.mode not in _KEEP:
            im = im.convert("RGBA" if im.mode == "P" and "transparency" in im.info else "L" if im.mode == "1" else "RGB")
        array = np.asarray(im)
        return array if array.ndim == 3 else array[..., None]


def decode_image(path: Path, *, rgb: bool = True) -> np.ndarray:
    """(H, W, C) uint8 or uint16 as stored: TIFF through tifffile (any channel count, 8 or 16 bit; PIL where
    tifffile cannot, e.g. JPEG-compressed TIFF without imagecodecs), the rest through PIL (16-bit greyscale PNGs
    keep their 16 bits). *rgb*: 8-bit images other than TIFF converted to RGB, as an RGB model reads them."""
    error: Exception | None = None
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            array = _tiff(path)
        except DataError:
            raise
        except FileNotFoundError:
            raise
        except Exception as exc:  # tifffile's errors have no common base class; PIL tries next
            error = exc
        else:
            if array.dtype == bool:
                array = array.astype(np.uint8)
            if array.dtype not in (np.uint8, np.uint16):
                raise DataError(f"{path}: TIFF of {array.dtype}; segcore reads 8- and 16-bit unsigned images "
                                "(save floats scaled to uint16, and set [model] max_value to the value meaning 1.0)")  # fmt: skip
            return np.ascontiguousarray(array)
    try:
        return _pil(path, rgb)
    except (OSError, ValueError, SyntaxError) as exc:
        if error is not None:
            raise ValueError(f"tifffile: {error}; PIL: {exc}") from exc
        raise


def match_channels(image: np.ndarray, channels: int, path: Path) -> np.ndarray:
    """*image* (H, W, C) with *channels* channels: as it is, or a single channel repeated for RGB (as PIL converts
    greyscale); any other difference is a DataError naming the file and the setting."""
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=-1)
    raise DataError(f"{path}: image has {have} channel{'s' if have != 1 else ''}, but the dataset reads {channels} "
                    f"([data.dataset] channels, and [model] in_channels): set both to {have}, or convert the file")


def model_input(model: object) -> tuple[int, float | None]:
    """(in_channels, max_value) of a `SegModel`, or of the one a wrapper holds in ``module`` (the inference fast
    path, EMA, DDP); (3, None), RGB of its type's range, for any other module."""
    for m in (model, getattr(model, "module", None)):
        if hasattr(m, "in_channels") and hasattr(m, "max_value"):
            return int(m.in_channels), m.max_value
    return 3, None
