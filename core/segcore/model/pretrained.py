"""timm's pretrained weights through the Hugging Face cache, failing fast when they cannot be had.

timm downloads through huggingface_hub, which retries for about a minute when the Hub cannot be reached. Here the
cache is looked at first; a file that is not there while the Hub is unreachable (or ``HF_HUB_OFFLINE`` is set)
is a ConfigError at once, naming the cache and the fix.

A local timm checkpoint (``kwargs = { checkpoint_path = "..." }`` of the timm backbone) is read safely too: a
safetensors file as it is, a ``.pth`` with ``torch.load(weights_only=True)``; a pickle that needs more is refused,
naming the file and how to convert it where it is trusted.
"""

from __future__ import annotations

__all__ = ["hub_offline", "hub_reachable", "load_timm_checkpoint", "timm_weights_file"]

import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from segcore.errors import ConfigError, DamagedFileError

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


_TIMM_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")  # where timm's load_checkpoint looks, in order


def _read_checkpoint(path: Path, what: str) -> dict:
    import pickle

    import torch

    if path.suffix == ".safetensors":
        import safetensors.torch

        try:
            return safetensors.torch.load_file(path)
        except Exception as exc:  # SafetensorError and friends: the message lacks the file's name
            raise DamagedFileError(f"{what}: {path}: damaged safetensors file: {exc}") from None
    try:
        import argparse

        with torch.serialization.safe_globals([argparse.Namespace]):  # timm's training checkpoints hold their args
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        why = f"it pickles {found.group(1)}" if found else "it pickles more than tensors"
        raise ConfigError(
            f"{what}: {path}: torch.load(weights_only=True) refuses it ({why}). segcore "
            "never unpickles; convert it once where you trust it, then give the .safetensors file: python -c \"import "
            f"torch, safetensors.torch as st; c = torch.load('{path}', weights_only=False); c = c.get('state_dict', "
            f"c) if isinstance(c, dict) else c; st.save_file({{k: v.contiguous() for k, v in c.items()}}, "
            f"'{path.with_suffix('.safetensors')}')\""
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise DamagedFileError(f"{what}: {path}: not a readable torch checkpoint ({exc})") from None


def load_timm_checkpoint(model: object, path: str | Path, *, what: str = "model.backbone.kwargs.checkpoint_path") -> None:
    """Load timm checkpoint *path* into *model* (timm's ``features_only`` model, ``torch.nn.Module``) safely: the
    state dict timm's ``load_checkpoint`` would pick (EMA first; ``module.`` prefixes dropped), the classifier and
    other tensors the feature model has no place for left out; a tensor the model needs that the file lacks, or has
    in another shape, is a ConfigError naming it."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{what}: no such file {str(path)!r}; give a timm checkpoint (.safetensors or .pth)")
    checkpoint = _read_checkpoint(path, what)
    if isinstance(checkpoint, dict):
        key = next((k for k in _TIMM_KEYS if isinstance(checkpoint.get(k), dict)), None)
        checkpoint = checkpoint[key] if key else checkpoint
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ConfigError(f"{what}: {path} holds no state dict of tensors (neither the file nor its "
                          f"{'/'.join(_TIMM_KEYS)} entry)")  # fmt: skip
    state = {k.removeprefix("module."): v for k, v in checkpoint.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    shapes = [f"{k} {tuple(state[k].shape)} (the model's: {tuple(v.shape)})" for k, v in own.items()
              if k in state and state[k].shape != v.shape]  # fmt: skip
    if missing or shapes:
        problem = (f"lacks {len(missing)} of the model's tensors ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"
                   if missing else f"has tensors of another shape: {', '.join(shapes[:2])}")  # fmt: skip
        raise ConfigError(f"{what}: {path} {problem}; is it a checkpoint of this model_name (and of 3-channel input)?")
    model.load_state_dict({k: state[k] for k in own}, strict=True)
