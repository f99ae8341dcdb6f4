"""timm's pretrained weights through the Hugging Face cache, failing fast when they cannot be had.

timm downloads through huggingface_hub, which retries for about a minute when the Hub cannot be reached. Here the
cache is looked at first; a file that is not there while the Hub is unreachable (or ``HF_HUB_OFFLINE`` is set)
is a ConfigError at once, naming the cache and the fix.
"""

from __future__ import annotations

__all__ = ["hub_offline", "hub_reachable", "timm_weights_file"]

import socket
from pathlib import Path
from urllib.parse import urlparse

from segcore.errors import ConfigError

_FILES = ("model.safetensors", "pytorch_model.bin")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface-hub parses it (its constant: ``1``/``ON``/``YES``/``TRUE`` are on, ``0`` is off)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can a TCP connection to the Hub's endpoint be opened (never with HF_HUB_OFFLINE set)?"""
    from huggingface_hub import constants

    if hub_offline():
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def timm_weights_file(model_name: str, *, what: str = "pretrained") -> Path:
    """The local file of timm's pretrained weights for *model_name* (``"resnet50.fb_swsl_ig1b_ft_in1k"``): from the
    Hugging Face cache, else downloaded; a ConfigError, fast, when neither is possible."""
    import timm
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    pcfg = timm.models.get_pretrained_cfg(model_name)
    if pcfg is None or not getattr(pcfg, "hf_hub_id", None):
        raise ConfigError(f"{what}: timm has no Hub weights for {model_name!r}; see timm.list_pretrained() for the tags")
    repo = pcfg.hf_hub_id
    for name in _FILES:
        cached = try_to_load_from_cache(repo, name)
        if isinstance(cached, str):
            return Path(cached)
    if not hub_reachable():
        offline = " (HF_HUB_OFFLINE is set)" if hub_offline() else ""
        raise ConfigError(
            f"{what}: timm's weights {repo!r} are not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the Hub "
            f"cannot be reached{offline}. Fill the cache on a machine with network (python -c \"import timm; "
            f"timm.create_model({model_name!r}, pretrained=True)\") and copy it here, or set pretrained = false."
        )
    try:
        return Path(hf_hub_download(repo, _FILES[0]))
    except Exception as exc:  # the Hub answered but has no such file, or the download broke
        raise ConfigError(f"{what}: could not download {repo}/{_FILES[0]}: {exc}") from exc
