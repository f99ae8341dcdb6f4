"""Data: datasets (PairDataset, folder, parquet), reading images and labels, batch augmentation."""

from segcore.data.datasets import *  # noqa: F403
from segcore.data.datasets import __all__ as _datasets

__all__ = list(_datasets)
