"""The one source resolver: the string a user gives for a model or its weights -> a `Source`.

Every caller resolves through `resolve_source` with the same rules and the same messages (only the *what* prefix
differs: ``from_pretrained``, ``[model] init_from``, ``run.checkpoint``, ``segcore export``, ``segcore hub save``):

===========  =========================================================================================================
kind         what the text is
===========  =========================================================================================================
``run``      an existing run folder: ``model.safetensors`` with ``run.json`` or ``pipeline.toml`` (or a
             ``checkpoints/ckpt-<step>`` folder of one)
``folder``   an existing model folder: ``config.json`` + ``model.safetensors`` (`save_pretrained`, ``segcore hub save``)
``file``     an existing ``.safetensors`` file
``zoo``      a pretrained name of the zoo manifest or registered by a plugin (``hrnet_l-camvid``); its sha256 is checked.
             A zoo name always means the zoo entry: a folder of the same name in the working directory is ``./name``
``hub``      a Hub model repo id, ``owner/name`` or ``hf-hub:owner/name``, with an optional ``@revision``
===========  =========================================================================================================

Refused, each with one message: a path that does not exist, a folder that is none of the above, a file that is not
``.safetensors`` (pickles: ``.pt``, ``.pth``, ``.bin``, ``.ckpt``), a malformed Hub repo id, an unknown name.
Nothing is downloaded until `Source.fetch` / `Source.weights` asks for a file.
"""

from __future__ import annotations

__all__ = ["KINDS", "Source", "file_sha256", "resolve_source"]

import hashlib
import os
import warnings
from pathlib import Path
from typing import Literal

from attrs import frozen

from segcore.contracts.registry import Registry
from segcore.errors import ConfigError, DamagedFileError, SegcoreError, did_you_mean
from segcore.hub.manifest import ZOO_VAR, ZooEntry, zoo
from segcore.model import pretrained
from segcore.model.weights import read_weights, sniff

CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
KINDS = ("run", "folder", "file", "zoo", "hub")
Kind = Literal["run", "folder", "file", "zoo", "hub"]
HF_PREFIX = "hf-hub:"
_PICKLES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
_PATHLIKE = (".safetensors", ".toml", ".json", *_PICKLES)
_GIVE = ("give a run folder, a model folder (config.json + model.safetensors), a .safetensors file, a pretrained name "
         "(`segcore hub list`) or a Hub repo id (owner/name, or hf-hub:owner/name@revision)")  # fmt: skip


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (what ``sha256sum`` prints and the Hub shows as a file's LFS oid)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@frozen
class Source:
    """A resolved model source. ``path``: the run folder, the model folder, the ``.safetensors`` file, or a zoo
    entry's shipped folder (None for what lives on the Hub: ``repo_id`` at ``revision``, None = main). ``entry``: the
    zoo entry whose sha256 pins the weights. ``what`` + ``text`` prefix every message about it."""

    kind: Kind
    text: str
    what: str
    path: Path | None = None
    repo_id: str | None = None
    revision: str | None = None
    entry: ZooEntry | None = None

    @property
    def label(self) -> str:
        return f"{self.what} {self.text!r}"

    @property
    def folder(self) -> Path | None:
        """The local folder holding the model's files (None for a file and for the Hub)."""
        return self.path if self.kind in ("run", "folder", "zoo") else None

    @property
    def has_config(self) -> bool:
        """Whether a ``config.json`` describes the model (a model folder, a zoo name, a Hub repo)."""
        return self.kind in ("folder", "zoo", "hub")

    def fetch(self, filename: str) -> Path:
        """One file of the model folder: local, or from the Hub through huggingface-hub's cache."""
        if self.kind == "file":
            raise ConfigError(f"{self.label}: a .safetensors file has no {filename}")
        if self.path is not None:
            path = self.path / filename
            if not path.is_file():
                raise DamagedFileError(f"{path}: missing; a model folder holds {CONFIG}, {WEIGHTS} and {CARD}")
            return path
        return _download(self, filename)

    def weights(self) -> Path:
        """The ``model.safetensors``, its sha256 checked against the zoo entry's (a damaged file says how first)."""
        path = self.path if self.kind == "file" else self.fetch(WEIGHTS)
        entry = self.entry
        if entry is not None and entry.sha256 is not None:
            got = file_sha256(path)
            if got != entry.sha256:
                read_weights(path)  # a truncated or altered file says so, which is more to the point
                raise DamagedFileError(
                    f"{path}: sha256 {got} differs from {entry.sha256}, the one {entry.pinned_by} pins for {entry.name}: "
                    "the file was replaced, or the pin is out of date. Restore the file (git checkout, or delete it "
                    "from the Hugging Face cache and load again); if you replaced it on purpose, put the new sha256 in "
                    "the manifest."
                )
        return path

    def beside(self, filename: str) -> Path | None:
        """*filename* of the folder a local source lives in (a run's ``pipeline.toml``), or None."""
        if self.path is None:
            return None
        folder = self.path.parent if self.kind == "file" else self.path
        for candidate in (folder, folder.parent.parent if folder.parent.name == "checkpoints" else None):
            if candidate is not None and (candidate / filename).is_file():
                return candidate / filename
        return None


def _refuse(what: str, text: str, why: str, error: type[Exception] = ConfigError) -> Exception:
    return error(f"{what} {text!r}: {why}")


def _local(text: str, path: Path, what: str, revision: str | None) -> Source:
    if revision is not None:
        raise _refuse(what, text, f"revision={revision!r} applies to Hub repos; a local path has none")
    if path.is_dir():
        if (path / CONFIG).is_file():
            return Source("folder", text, what, path=path)
        if (path / WEIGHTS).is_file():  # a run folder, or one of its checkpoints/ckpt-<step>
            return Source("run", text, what, path=path)
        if (path / "run.json").is_file():
            raise _refuse(what, text, "is a run folder without model.safetensors: the run has not finished (point at "
                                      "one of its checkpoints/ckpt-<step> folders, or let it finish)")  # fmt: skip
        raise _refuse(what, text, f"is a folder with neither {WEIGHTS} nor {CONFIG}, so neither a run folder nor a "
                                  f"model folder; {_GIVE}")  # fmt: skip
    if path.suffix == ".safetensors":
        return Source("file", text, what, path=path)
    kind = sniff(path) or (f"a {path.suffix} file" if path.suffix else "a file without a suffix")
    if "torch.save" in kind or path.suffix in _PICKLES:  # unpickling runs whatever code the file holds
        hint = ("segcore never unpickles; convert it once where you trust it: python -c \"import torch, safetensors.torch "
                f"as st; st.save_file(torch.load({text!r}, weights_only=True), 'model.safetensors')\"")  # fmt: skip
    else:
        hint = _GIVE
    raise _refuse(what, text, f"this is {kind}, not a safetensors weights file; {hint}")


def _hub(text: str, repo: str, revision: str | None, what: str) -> Source:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo, at, rev = repo.partition("@")
    if at and not rev:
        raise _refuse(what, text, "is not a Hub repo id: nothing after '@' (owner/name@revision)")
    if rev and revision is not None and rev != revision:
        raise _refuse(what, text, f"names revision {rev!r}, and revision={revision!r} is given too; give one")
    try:
        if repo.count("/") != 1:
            raise HFValidationError("a model repo id is owner/name")
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise _refuse(what, text, f"is not a Hub repo id ({exc}); {_GIVE}") from None
    return Source("hub", text, what, repo_id=repo, revision=rev or revision)


def _zoo(text: str, entry: ZooEntry, revision: str | None, what: str) -> Source:
    if revision is not None and revision != entry.revision:  # another revision: the manifest's sha256 is not its
        if not entry.repo_id:
            raise _refuse(what, text, f"revision={revision!r}, but this zoo entry has no Hub repo")
        return Source("hub", text, what, repo_id=entry.repo_id, revision=revision)
    shipped = entry.path(entry.folder)
    if shipped is not None and shipped.is_dir():
        return Source("zoo", text, what, path=shipped, entry=entry)
    if entry.revision or (entry.repo_id and (entry.manifest is None or (entry.folder and shipped is None))):
        return Source("zoo", text, what, repo_id=entry.repo_id, revision=entry.revision, entry=entry)
    if shipped is not None:
        raise _refuse(what, text, f"its shipped folder {shipped} is missing; restore it (git checkout -- {shipped})",
                      DamagedFileError)  # fmt: skip
    if entry.folder:
        raise _refuse(what, text, f"its weights are shipped in the repository ({entry.folder}) and it has no Hub repo: "
                                  f"in a clone, set {ZOO_VAR}=<clone>/hub")  # fmt: skip
    recipe = entry.path(entry.recipe)
    train = (f" Its recipe is {recipe}: train it with `segcore run {recipe}`, then `segcore hub save <run folder> "
             f"hub/models/{entry.name} --name {entry.name}` and add the printed lines to the manifest.") if recipe else (
             f" Its recipe is hub/{entry.recipe} of a clone ({ZOO_VAR}=<clone>/hub)." if entry.recipe else "")  # fmt: skip
    why = f" ({entry.reason})" if entry.reason else ""
    raise _refuse(what, text, f"weights not published{why}.{train}")


def resolve_source(text: str | Path, *, what: str, registry: Registry | None = None,
                   revision: str | None = None) -> Source:  # fmt: skip
    """Resolve *text* (see the module's table) for caller *what*; *registry* adds the names plugins register,
    *revision* picks a Hub revision (branch, tag or commit) of a Hub repo or a zoo name."""
    text = str(text)
    if not text.strip():
        raise _refuse(what, text, f"is empty; {_GIVE}")
    if text.startswith(HF_PREFIX):
        return _hub(text, text.removeprefix(HF_PREFIX), revision, what)
    path = Path(text).expanduser()
    bare = not text.startswith((".", "~")) and "/" not in text and os.sep not in text
    if bare:  # a zoo name means the zoo entry, sha256 checked, even when a folder in the working directory has its name
        entry = zoo(registry).get(text)
        if entry is not None:
            if path.exists():
                warnings.warn(f"{what} {text!r} is the zoo entry {text!r} (its sha256 checked), not the {path.resolve()} "
                              f"in the working directory; to load that one, write {'./' + text!r}", stacklevel=2)  # fmt: skip
            try:
                return _zoo(text, entry, revision, what)
            except SegcoreError as exc:
                if not path.exists():
                    raise
                raise type(exc)(f"{exc} (the {path.resolve()} in the working directory is not used for a zoo name; "
                                f"to load it, write {'./' + text!r})") from exc.__cause__  # fmt: skip
    if path.exists():
        return _local(text, path, what, revision)
    pathlike = text.startswith(("/", ".", "~")) or text.count("/") > 1 or os.sep in text.replace("/", "")
    if pathlike or text.lower().endswith(_PATHLIKE):
        unfinished = ""
        if path.name == WEIGHTS and (path.parent / "run.json").is_file():
            unfinished = " (that run has not finished: point at one of its checkpoints/ckpt-<step> folders)"
        raise _refuse(what, text, f"no such file or folder{unfinished}; {_GIVE}")
    if "/" in text:
        return _hub(text, text, revision, what)
    entries = zoo(registry)
    raise _refuse(what, text, f"unknown pretrained name{did_you_mean(text, entries)}; known: {', '.join(entries) or 'none'}"
                              f" (`segcore hub list`); or {_GIVE}")  # fmt: skip


def _download(source: Source, filename: str) -> Path:
    """One file of a Hub model repo through huggingface-hub's cache (offline: the cache only, no request at all)."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )  # fmt: skip

    from segcore._version import __version__

    repo_id, revision, label = source.repo_id, source.revision, source.label
    offline = pretrained.hub_offline()
    local = offline or not pretrained.hub_reachable()  # an unreachable Hub: the cache alone, not a minute of retries
    at = f"{repo_id} at revision {revision or 'main'}"
    shipped = ""
    if source.entry is not None and source.entry.folder:
        shipped = f" (its weights are also shipped in the repository's hub/{source.entry.folder}: in a clone set {ZOO_VAR}=<clone>/hub)"
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=local,
                                    library_name="segcore", library_version=__version__))  # fmt: skip
    except LocalEntryNotFoundError:
        fetch = f"hf download {repo_id} {CONFIG} {WEIGHTS} {CARD}" + (f" --revision {revision}" if revision else "")
        if offline:
            raise ConfigError(
                f"{label}: {filename} of {at} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                f"HF_HUB_OFFLINE=1 forbids downloading it. On a machine with network run `{fetch}` (same HF_HUB_CACHE), "
                f"or unset HF_HUB_OFFLINE.{shipped}"
            ) from None
        raise ConfigError(f"{label}: {filename} of {at} is not cached and the Hub cannot be reached; check the network, "
                          f"or fill the cache elsewhere with `{fetch}` and set HF_HUB_OFFLINE=1.{shipped}") from None  # fmt: skip
    except RevisionNotFoundError:
        raise ConfigError(f"{label}: the Hub repo {repo_id} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"{label}: no Hub model repo {repo_id!r} (or it is private: log in with `hf auth login`)"
                          f"{shipped}") from None  # fmt: skip
    except EntryNotFoundError:
        raise ConfigError(f"{label}: {at} has no {filename}; it is not a segcore model repo (push one with "
                          "`segcore hub push`)") from None  # fmt: skip
    except HfHubHTTPError as exc:
        raise ConfigError(f"{label}: downloading {filename} of {at} failed: {exc}") from None
