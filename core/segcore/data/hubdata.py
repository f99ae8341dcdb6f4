"""Datasets on the Hugging Face Hub: parquet shards (image and mask columns) plus a dataset card.

`convert` writes any registered dataset in that form (``segcore data convert``); `HubDataset` (``name = "hub"``)
reads it back from a local folder or a Hub repo (through the local cache, so ``HF_HUB_OFFLINE=1`` works);
`push` publishes a folder (``segcore data push``). Images keep their original file bytes and masks are PNGs
of the class ids, so the round trip is lossless; ``datasets.load_dataset`` reads the same folder.
"""

from __future__ import annotations

__all__ = ["HubDataset", "HubDatasetConfig", "convert", "push"]

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from attrs import frozen
from PIL import Image
from torch import Tensor

from segcore.errors import DataError
from segcore.io import atomic_write, write_text
from segcore.contracts.stages import Dataset, DatasetMeta


def _png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _rows(dataset: Dataset, indices: range) -> Iterator[dict[str, Any]]:
    pairs = getattr(dataset, "pairs", None)
    for i in indices:
        sample = dataset[i]
        mask = sample["mask"].numpy()
        if mask.max(initial=0) > 255:
            raise DataError("masks with ids above 255 do not fit the PNG mask column")
        if pairs is not None:  # the original file bytes: bit-identical images, JPEGs stay JPEGs
            image_path = Path(pairs[i][0])
            image = {"bytes": image_path.read_bytes(), "path": image_path.name}
        else:
            buf = io.BytesIO()
            Image.fromarray(sample["image"].permute(1, 2, 0).numpy()).save(buf, format="PNG")
            image = {"bytes": buf.getvalue(), "path": f"{i:08d}.png"}
        yield {"image": image, "mask": {"bytes": _png(mask), "path": f"{Path(image['path']).stem}.png"}}


def convert(datasets_by_split: dict[str, Dataset], out: Path, *, title: str, rows_per_shard: int = 500,
            description: str = "") -> Path:  # fmt: skip
    """Write ``out/data/<split>-NNNNN-of-NNNNN.parquet`` and ``out/README.md`` (the dataset card)."""
    import datasets
    from huggingface_hub import DatasetCard, DatasetCardData

    out = Path(out)
    meta = next(iter(datasets_by_split.values())).meta
    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    splits = []
    for split, dataset in datasets_by_split.items():
        n = max(1, math.ceil(len(dataset) / rows_per_shard))
        for k in range(n):  # one shard in memory at a time
            rows = _rows(dataset, range(k * rows_per_shard, min((k + 1) * rows_per_shard, len(dataset))))
            with atomic_write(out / "data" / f"{split}-{k:05d}-of-{n:05d}.parquet") as tmp:
                datasets.Dataset.from_list(list(rows), features=features).to_parquet(str(tmp))
        splits.append({"name": split, "num_examples": len(dataset)})
    card_data = DatasetCardData(
        task_categories=["image-segmentation"],
        configs=[{"config_name": "default", "data_files": [{"split": s["name"], "path": f"data/{s['name']}-*"}
                                                             for s in splits]}],  # fmt: skip
        dataset_info={"features": [{"name": "image", "dtype": "image"}, {"name": "mask", "dtype": "image"}], "splits": splits},
        segcore={"class_names": list(meta.class_names), "palette": [list(c) for c in meta.palette],
                 "ignore_index": meta.ignore_index},  # fmt: skip
    )
    classes = "\n".join(f"| {i} | {n} | {tuple(c)} |" for i, (n, c) in enumerate(zip(meta.class_names, meta.palette)))
    body = (
        f"# {title}\n\n{description}\n\nWritten by `segcore data convert`. Columns: `image` (the original image file) "
        f"and `mask` (PNG of class ids; {meta.ignore_index} = ignore).\n\n"
        + "".join(f"- {s['name']}: {s['num_examples']} samples\n" for s in splits)
        + f"\n| id | class | colour |\n|---|---|---|\n{classes}\n"
    )
    write_text(out / "README.md", DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}").content)
    return out


def push(folder: Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload a converted folder as dataset repo *repo_id*; returns the commit URL."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "README.md").is_file() or not list(folder.glob("data/*.parquet")):
        raise DataError(f"{folder}: not a converted dataset (README.md and data/*.parquet); run `segcore data convert` first")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                             commit_message="segcore data push")  # fmt: skip
    return str(getattr(info, "commit_url", info))


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
