"""Datasets on the Hugging Face Hub: parquet shards (image and mask columns) plus a dataset card.

`HubDataset` (``name = "hub"``) reads a folder written by `segcore.hub.datasets.convert` (``segcore data convert``)
back, from a local folder or a Hub repo (through the local cache, so ``HF_HUB_OFFLINE=1`` works); publishing one is
`segcore.hub.datasets.push` (``segcore data push``): both live in the hub layer, above the data.
"""

from __future__ import annotations

__all__ = ["HubDataset", "HubDatasetConfig", "resolve_dataset_folder"]

import io
from pathlib import Path

import numpy as np
import torch
from attrs import frozen
from PIL import Image
from torch import Tensor

from segcore.errors import DataError
from segcore.contracts.stages import Dataset, DatasetMeta


@frozen
class HubDatasetConfig:
    """Table [data.dataset] when name = "hub": a folder written by `segcore data convert`, or a Hub dataset repo
    id (downloaded once into the Hugging Face cache; with HF_HUB_OFFLINE=1 only the cache is used)."""

    path: str
    revision: str | None = None


def resolve_dataset_folder(path: str, revision: str | None = None) -> Path:
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    if local.exists() or path.startswith((".", "/", "~")):
        raise DataError(f"{path}: not a folder; give a folder written by `segcore data convert` or a Hub repo id")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(path, repo_type="dataset", revision=revision))
    except LocalEntryNotFoundError as exc:
        raise DataError(
            f"dataset repo {path!r} is not in the Hugging Face cache and the Hub cannot be reached ({exc}). "
            "Download it on a machine with network (huggingface-cli download --repo-type dataset ...) or unset HF_HUB_OFFLINE."
        ) from None
    except HfHubHTTPError as exc:
        raise DataError(f"dataset repo {path!r}: {exc}") from None


class HubDataset(Dataset):
    """Samples of one split of a converted dataset; class names, palette and ignore id from its card."""

    splits = ("train", "val", "test", "validation")

    def __init__(self, cfg: HubDatasetConfig, *, split: str) -> None:
        super().__init__()
        import pyarrow.parquet as pq
        from huggingface_hub import DatasetCard

        folder = resolve_dataset_folder(cfg.path, cfg.revision)
        card_path = folder / "README.md"
        if not card_path.is_file():
            raise DataError(f"{folder}: no dataset card (README.md); was it written by `segcore data convert`?")
        info = DatasetCard.load(card_path).data.to_dict().get("segcore")
        if not info:
            raise DataError(f"{card_path}: the card's YAML has no 'segcore' section with class_names, palette, ignore_index")
        self.meta = DatasetMeta(tuple(info["class_names"]), tuple(tuple(c) for c in info["palette"]), int(info["ignore_index"]))
        files = sorted((folder / "data").glob(f"{split}-*.parquet"))
        if not files:
            found = sorted({p.name.split("-")[0] for p in (folder / "data").glob("*.parquet")})
            raise DataError(f"{folder}: no split {split!r}; it has {', '.join(found) or 'none'}")
        table = pq.ParquetDataset([str(f) for f in files]).read(columns=["image", "mask"])
        self._images = table.column("image").combine_chunks().field("bytes")
        self._masks = table.column("mask").combine_chunks().field("bytes")

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        with Image.open(io.BytesIO(self._images[index].as_py())) as im:
            image = np.asarray(im.convert("RGB"))
        with Image.open(io.BytesIO(self._masks[index].as_py())) as im:
            mask = np.asarray(im)
        return {"image": torch.from_numpy(image.copy()).permute(2, 0, 1), "mask": torch.from_numpy(mask.astype(np.int64))}
