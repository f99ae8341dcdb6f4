"""Datasets for the Hugging Face Hub: `convert` any registered dataset to parquet shards (image and mask columns)
plus a dataset card (``segcore data convert``), and `push` such a folder (``segcore data push``). Images keep their
original file bytes and masks are PNGs of the class ids, so the round trip is lossless; `HubDataset`
(``[data.dataset] name = "hub"``) and ``datasets.load_dataset`` read the same folder back.
"""

from __future__ import annotations

__all__ = ["convert", "push"]

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segcore.contracts.stages import Dataset
from segcore.errors import DataError
from segcore.hub.publish import check_repo_id, push_folder
from segcore.io import atomic_dir, claim, record, write_text


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


_SIGNATURE = "Written by `segcore data convert`."
_SHARD = "[0-9]" * 5


def convert(datasets_by_split: dict[str, Dataset], out: Path, *, title: str, rows_per_shard: int = 500,
            description: str = "") -> Path:  # fmt: skip
    """Write ``out/data/<split>-NNNNN-of-NNNNN.parquet`` and ``out/README.md`` (the dataset card).

    Converting again replaces the whole shard set at once (`segcore.io.atomic_dir` on ``out/data``: no shard of
    the old set stays beside the new one), then the card. A card or parquet file that segcore did not write is
    never replaced (`segcore.io.claim`); the folder's other files stay."""
    import datasets
    from huggingface_hub import DatasetCard, DatasetCardData

    out = Path(out)
    try:  # a folder converted before segcore.io.WRITTEN: its card says segcore wrote it and the shards
        legacy = _SIGNATURE in (out / "README.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        legacy = False
    claim(out, ("README.md", "data/*.parquet"), what="segcore data convert", hint="Choose another --out, or move "
          "those files away.", ours=("README.md", f"data/*-{_SHARD}-of-{_SHARD}.parquet") if legacy else ())  # fmt: skip
    meta = next(iter(datasets_by_split.values())).meta
    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    splits, names = [], ["README.md"]
    with atomic_dir(out / "data", drop=["*.parquet"]) as tmp:  # every old shard is segcore's (claimed above)
        for split, dataset in datasets_by_split.items():
            n = max(1, math.ceil(len(dataset) / rows_per_shard))
            for k in range(n):  # one shard in memory at a time
                rows = _rows(dataset, range(k * rows_per_shard, min((k + 1) * rows_per_shard, len(dataset))))
                name = f"{split}-{k:05d}-of-{n:05d}.parquet"
                datasets.Dataset.from_list(list(rows), features=features).to_parquet(str(tmp / name))
                names.append(f"data/{name}")
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
        f"# {title}\n\n{description}\n\n{_SIGNATURE} Columns: `image` (the original image file) "
        f"and `mask` (PNG of class ids; {meta.ignore_index} = ignore).\n\n"
        + "".join(f"- {s['name']}: {s['num_examples']} samples\n" for s in splits)
        + f"\n| id | class | colour |\n|---|---|---|\n{classes}\n"
    )
    write_text(out / "README.md", DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}").content)
    record(out, names, forget=["data/*.parquet"])
    return out


def push(folder: Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload a converted folder as dataset repo *repo_id* (`push_folder`); returns the commit URL."""
    check_repo_id(repo_id, what=f"--repo-id {repo_id!r}")
    folder = Path(folder)
    if not (folder / "README.md").is_file() or not list(folder.glob("data/*.parquet")):
        raise DataError(f"{folder}: not a converted dataset (README.md and data/*.parquet); run `segcore data convert` first")
    info = push_folder(folder, repo_id, repo_type="dataset", private=private, token=token, commit_message="segcore data push")
    return str(getattr(info, "commit_url", info))
