"""Publishing to the Hugging Face Hub: one `push_folder` (``create_repo`` + ``upload_folder``) for model folders
(`push_to_hub`, ``segcore hub push``) and converted datasets (``segcore data push``)."""

from __future__ import annotations

__all__ = ["PushResult", "check_repo_id", "push_folder", "push_to_hub"]

import importlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from attrs import frozen
from torch import nn

from segcore.errors import ConfigError, DamagedFileError
from segcore.hub.folder import _read_config, save_pretrained
from segcore.hub.sources import CARD, CONFIG, WEIGHTS, file_sha256, resolve_source
from segcore.model import pretrained
from segcore.model.weights import read_weights


@frozen
class PushResult:
    repo_id: str
    revision: str  # the commit the upload made: pin it in the manifest
    url: str
    sha256: str  # of model.safetensors


def push_folder(folder: str | Path, repo_id: str, *, repo_type: Literal["model", "dataset"], private: bool = False,
                token: str | None = None, commit_message: str,
                ignore_patterns: Sequence[str] = (".*",)) -> Any:  # fmt: skip
    """Upload *folder* as Hub repo *repo_id* of *repo_type* (created if needed; hidden files stay behind); returns
    huggingface-hub's ``CommitInfo``. Check the folder before: this sends it as it is. A bad repo id, an offline
    machine (``HF_HUB_OFFLINE``, no network) or a refusal by the Hub is a ConfigError saying which."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    check_repo_id(repo_id, what=f"--repo-id {repo_id!r}")
    where = f"pushing {folder} to the Hub {repo_type} repo {repo_id}"
    if pretrained.hub_offline():
        raise ConfigError(f"{where}: HF_HUB_OFFLINE is set, and a push needs the network; unset it (or push from a "
                          "machine that is online)")  # fmt: skip
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        return api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type,
                                 commit_message=commit_message, ignore_patterns=list(ignore_patterns))  # fmt: skip
    except _network_errors() as exc:  # OfflineModeIsEnabled is a ConnectionError too
        raise ConfigError(f"{where}: the Hub ({constants.ENDPOINT}) cannot be reached ({type(exc).__name__}: {exc}); "
                          "check the network and push again (nothing is half-pushed: a push is one commit)") from None
    except HfHubHTTPError as exc:
        raise ConfigError(f"{where}: the Hub refused: {exc} (logged in? `hf auth login`; may you write to "
                          f"{repo_id.split('/')[0]}?)") from None  # fmt: skip


def _network_errors() -> tuple[type[BaseException], ...]:
    """What huggingface-hub's HTTP client raises when the Hub cannot be reached (its client library has changed
    between releases: httpx, httpx2, requests)."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "ConnectionError")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def check_repo_id(repo_id: str, *, what: str) -> None:
    """A Hub repo id is ``owner/name`` as huggingface-hub's ``validate_repo_id`` takes it (no ``..``, ``--``, no
    other characters); else a ConfigError naming *what*."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if repo_id.count("/") != 1:
            raise HFValidationError("a repo id is owner/name, with one '/'")
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ConfigError(f"{what} is not a Hub repo id: {exc}") from None


def push_to_hub(folder_or_model: str | Path | nn.Module, repo_id: str, *, private: bool = False, token: str | None = None,
                commit_message: str = "segcore hub push") -> PushResult:  # fmt: skip
    """Upload a model folder (or a model, saved first with `save_pretrained`) as Hub model repo *repo_id*. The folder
    is checked first (config.json, intact weights, card)."""
    check_repo_id(repo_id, what=f"push_to_hub repo_id {repo_id!r}")
    with tempfile.TemporaryDirectory(prefix="segcore-push-") as tmp:
        if isinstance(folder_or_model, nn.Module):
            folder = save_pretrained(folder_or_model, Path(tmp) / "model")
        else:
            folder = Path(folder_or_model)
            if not folder.is_dir():
                raise ConfigError(f"push_to_hub {str(folder)!r}: no such folder; push a folder written by save_pretrained "
                                  "or segcore hub save")  # fmt: skip
            source = resolve_source(folder, what="push_to_hub")
            if source.kind != "folder":
                raise ConfigError(f"{source.label}: is a {source.kind} folder without {CONFIG}; push a model folder "
                                  f"(make one from a run with `segcore hub save {folder} <out>`)")  # fmt: skip
        _read_config(folder / CONFIG, str(folder))
        read_weights(folder / WEIGHTS)
        if not (folder / CARD).is_file():
            raise DamagedFileError(f"{folder / CARD}: missing; the model card is written with the folder (save_pretrained)")
        info = push_folder(folder, repo_id, repo_type="model", private=private, token=token, commit_message=commit_message)
        return PushResult(repo_id, str(getattr(info, "oid", "")), str(getattr(info, "commit_url", info)),
                          file_sha256(folder / WEIGHTS))  # fmt: skip
