"""The zoo manifest: pretrained name -> where its weights are, what it scored, the recipe that trains it.

The manifest is package data (``segcore/hub/zoo.toml``), so an installed wheel knows the same names as a clone.
``$SEGCORE_ZOO`` overrides it: a folder holding its own ``manifest.toml`` (a private zoo), or a folder without one
whose ``models/``, ``recipes/`` and ``cards/`` the packaged entries are relative to (a clone's ``hub/``). An
editable install from a clone uses that clone's ``hub/`` without the variable; a wheel install looks for no shipped
folder, and such an entry falls back to its Hub repo. Plugins add names with
``registry.add_pretrained``; a manifest entry wins.
"""

from __future__ import annotations

__all__ = ["FORMAT", "MANIFEST", "NAME", "ZOO_VAR", "ZooEntry", "manifest_source", "zoo", "zoo_dir"]

import functools
import importlib.metadata
import json
import os
import re
import urllib.parse
import urllib.request
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
from attrs import field, frozen

from segcore.config import structure_table
from segcore.contracts.registry import Registry
from segcore.errors import ConfigError

FORMAT = 1  # of the manifest and of config.json; a newer one is refused with the upgrade command
ZOO_VAR = "SEGCORE_ZOO"  # a zoo folder: its manifest.toml, or the folder the packaged entries' paths are relative to
MANIFEST = "manifest.toml"
PACKAGED = "zoo.toml"  # the packaged manifest, beside this module
NAME = re.compile(r"^[a-z0-9_]+(-[a-z0-9_]+){1,2}$")  # <arch>-<dataset>[-<recipe>] (STYLE.md section 7)
_HEX40, _HEX64 = re.compile(r"^[0-9a-f]{40}$"), re.compile(r"^[0-9a-f]{64}$")


def _pattern(regex: re.Pattern[str], what: str):
    def check(_: Any, attribute: attrs.Attribute, value: str | None) -> None:
        if value is not None and not regex.match(value):
            raise ValueError(f"{attribute.name}: {value!r} is not {what}")

    return check


@frozen
class ZooEntry:
    """One pretrained name of the zoo (a ``[models."<name>"]`` table of the manifest).

    ``folder``: a model folder shipped in the repository (relative to the zoo folder); ``repo_id`` + ``revision``:
    the Hub repo pinned to a commit; ``sha256``: of ``model.safetensors``'s bytes (``sha256sum``; the Hub's LFS oid),
    required with either. ``metrics`` are measured (percent, as the card states them), ``paper`` what the paper
    reports; ``reason`` says why an entry without weights has none. ``recipe`` is the pipeline that trains it.
    """

    plugin: str
    dataset: str
    summary: str = ""
    recipe: str | None = None
    folder: str | None = None
    repo_id: str | None = None
    revision: str | None = field(default=None, validator=_pattern(_HEX40, "a 40-digit commit sha (pin the revision)"))
    sha256: str | None = field(default=None, validator=_pattern(_HEX64, "a 64-digit hex sha256"))
    metrics: Mapping[str, Any] = field(factory=dict)
    paper: Mapping[str, Any] = field(factory=dict)
    reason: str = ""
    name: str = ""  # the table's key, set when the manifest is read
    base: Path | None = None  # the zoo folder its paths are relative to (None: a wheel's manifest, or a plugin's name)
    manifest: str | None = None  # where the entry was read (None: registered by a plugin)

    def path(self, relative: str | None) -> Path | None:
        return None if relative is None or self.base is None else self.base / relative

    @property
    def pinned_by(self) -> str:
        """Who pins its sha256, for messages."""
        return f"the zoo manifest ({self.manifest})" if self.manifest else f"plugin {self.plugin!r} (add_pretrained)"

    @property
    def status(self) -> str:
        where = []
        if self.folder:
            where.append(f"shipped ({self.folder})")
        if self.revision:
            where.append(f"Hub {self.repo_id}@{self.revision[:7]}")
        elif self.repo_id and (self.manifest is None or (self.folder and self.base is None)):
            where.append(f"Hub {self.repo_id}@main")
        return ", ".join(where) or "weights not published"


def zoo_dir() -> Path | None:
    """The zoo folder: ``$SEGCORE_ZOO``, else the ``hub/`` folder of the clone segcore is installed from in editable
    mode (``pip install -e``, found through the install's PEP 610 record, ``direct_url.json``), else None (a wheel:
    entries fall back to their Hub repos)."""
    env = os.environ.get(ZOO_VAR)
    if not env:
        return _editable_clone_hub()
    folder = Path(env).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{ZOO_VAR}={env}: no such folder; point it at a zoo folder (a clone's hub/, or a folder "
                          f"holding a {MANIFEST}), or unset it")  # fmt: skip
    return folder


@functools.cache
def _editable_clone_hub() -> Path | None:
    try:
        record = json.loads(importlib.metadata.distribution("segcore").read_text("direct_url.json") or "null")
    except (importlib.metadata.PackageNotFoundError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or not record.get("dir_info", {}).get("editable"):
        return None
    url = urllib.parse.urlparse(record.get("url", ""))
    if url.scheme != "file":
        return None
    hub = Path(urllib.request.url2pathname(url.path)) / "hub"
    return hub if (hub / "models").is_dir() else None


def manifest_source() -> tuple[str, str]:
    """(where, text) of the manifest in use: ``$SEGCORE_ZOO/manifest.toml``, else the packaged one."""
    folder = zoo_dir()
    if folder is not None and (folder / MANIFEST).is_file():
        path = folder / MANIFEST
        try:
            return str(path), path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the zoo manifest: {exc}") from None
    packaged = resources.files("segcore.hub") / PACKAGED
    return f"segcore/hub/{PACKAGED}", packaged.read_text(encoding="utf-8")


def _read_manifest(where: str, text: str, base: Path | None) -> dict[str, ZooEntry]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: cannot read the zoo manifest: {exc}") from None
    if raw.get("format") != FORMAT or set(raw) - {"format", "models"}:
        raise ConfigError(f"{where}: expected `format = {FORMAT}` and [models.\"<name>\"] tables, got keys {sorted(raw)}")
    out = {}
    for name, table in raw.get("models", {}).items():
        if not NAME.match(name):
            raise ConfigError(f"{where}: models.{name!r}: names are <arch>-<dataset>[-<recipe>], lowercase (like 'hrnet_l-camvid')")
        if not isinstance(table, Mapping) or {"name", "base", "manifest"} & set(table):
            raise ConfigError(f"{where}: models.{name!r} must be a table of entry keys")
        at = f"{where} [models.\"{name}\"]"
        entry = structure_table(table, ZooEntry, registry=Registry(), source=at)
        if (entry.folder or entry.revision) and not entry.sha256:
            raise ConfigError(f"{at}: an entry with a folder or a revision needs the sha256 of its model.safetensors "
                              "(sha256sum; segcore hub save prints it)")  # fmt: skip
        if entry.revision and not entry.repo_id:
            raise ConfigError(f"{at}: revision needs repo_id")
        out[name] = attrs.evolve(entry, name=name, base=base, manifest=where)
    return out


def zoo(registry: Registry | None = None) -> dict[str, ZooEntry]:
    """Every pretrained name: the manifest's entries, then those plugins register (a manifest entry wins)."""
    where, text = manifest_source()
    entries = _read_manifest(where, text, zoo_dir())
    for name, p in (registry.pretrained() if registry is not None else {}).items():
        if name not in entries:
            entries[name] = ZooEntry(plugin=p.plugin.name, dataset="", repo_id=p.repo_id, revision=p.revision,
                                     sha256=p.sha256, name=name)  # fmt: skip
    return dict(sorted(entries.items()))
