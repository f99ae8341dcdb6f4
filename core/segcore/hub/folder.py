"""Pretrained models: `from_pretrained`, `save_pretrained`, `push_to_hub` and the zoo manifest (STYLE.md section 6).

A model folder is a Hugging Face model repo:

- ``model.safetensors``: the inference weights (no training-only heads) with segcore's integrity record;
- ``config.json``: the inference ``[model]`` table (the stages, normalisation, class count), the dataset's class
  names, palette and ignore id, the input size, the plugins (distribution and version) whose components it uses,
  and, when it was saved from a run, the measured metrics with their protocol and how it was trained;
- ``README.md``: the model card; from a run also ``pipeline.toml`` (the resolved training pipeline) and ``curves.png``.

Names resolve through the zoo manifest (``hub/manifest.toml`` of a clone, or ``$SEGCORE_ZOO/manifest.toml``) and
the pretrained names plugins register (``registry.add_pretrained``). An entry is a folder shipped inside the
repository (a fresh clone loads it offline), a Hub repo at a pinned revision (fetched with ``hf_hub_download``:
huggingface-hub's cache, revisions and ``HF_HUB_OFFLINE=1``), or both; an entry without either says that its
weights are not published and names its recipe. Loading is strict and every check names what to do: a plugin the
model needs (the ``pip install`` line), tensors missing, unexpected or of another shape (by name), a sha256 that
differs from the manifest's, a damaged file, a name not cached while offline. Only ``num_classes=`` relaxes it:
the classifier starts fresh for another class count.
"""

from __future__ import annotations

__all__ = [
    "MANIFEST", "ZOO_VAR", "PushResult", "ZooEntry", "file_sha256", "from_pretrained", "is_pretrained_name",
    "load_for_pipeline", "push_to_hub", "render_zoo_card", "save_pretrained", "save_run", "weights_for", "zoo",
    "zoo_dir",
]  # fmt: skip

import datetime
import functools
import hashlib
import json
import math
import os
import platform
import re
import shutil
import string
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from attrs import field, frozen
from torch import nn

from segcore.config import ModelConfig, PipelineConfig, load_pipeline, structure_table, unstructure
from segcore.errors import ConfigError, DamagedFileError, RegistryError, did_you_mean
from segcore.io import atomic_dir, write_text
from segcore.model.build import SegModel, _classifier_keys, build_model, inference_state_dict
from segcore.contracts.registry import Registry
from segcore.contracts.stages import STAGES, Attention, Backbone, DatasetMeta, Decoder, Enhancer
from segcore.model.weights import apply_weights, read_weights, save_weights, tensors_sha256

FORMAT = 1  # of config.json; a newer one is refused with the upgrade command
CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
ZOO_VAR = "SEGCORE_ZOO"  # a folder holding manifest.toml (default: hub/ of the clone segcore runs from)
MANIFEST = "manifest.toml"
_STAGES = {s.__name__.lower(): s for s in STAGES}
_NAME = re.compile(r"^[a-z0-9_]+(-[a-z0-9_]+){1,2}$")  # <arch>-<dataset>[-<recipe>] (STYLE.md section 7)
_HEX40, _HEX64 = re.compile(r"^[0-9a-f]{40}$"), re.compile(r"^[0-9a-f]{64}$")


# -- the zoo manifest -----------------------------------------------------------------------------------------------


def _pattern(regex: re.Pattern[str], what: str):
    def check(_: Any, attribute: attrs.Attribute, value: str | None) -> None:
        if value is not None and not regex.match(value):
            raise ValueError(f"{attribute.name}: {value!r} is not {what}")

    return check


@frozen
class ZooEntry:
    """One pretrained name of the zoo (a ``[models."<name>"]`` table of the manifest).

    ``folder``: a model folder shipped in this repository (relative to the manifest); ``repo_id`` + ``revision``: the
    Hub repo pinned to a commit; ``sha256``: of ``model.safetensors``'s bytes (``sha256sum``; the Hub's LFS oid),
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
    base: Path | None = None  # the manifest's folder, set when the manifest is read

    def path(self, relative: str | None) -> Path | None:
        return None if relative is None or self.base is None else self.base / relative

    @property
    def status(self) -> str:
        where = []
        if self.folder:
            where.append(f"shipped ({self.folder})")
        if self.revision:
            where.append(f"Hub {self.repo_id}@{self.revision[:7]}")
        elif self.repo_id and self.base is None:  # registered by a plugin
            where.append(f"Hub {self.repo_id}@main")
        return ", ".join(where) or "weights not published"


def zoo_dir() -> Path | None:
    """The folder of the zoo manifest: ``$SEGCORE_ZOO``, else ``hub/`` of the clone this segcore runs from."""
    env = os.environ.get(ZOO_VAR)
    if env:
        folder = Path(env).expanduser()
        if not (folder / MANIFEST).is_file():
            raise ConfigError(f"{ZOO_VAR}={env}: no {MANIFEST} there; point it at a folder holding the zoo manifest, or unset it")
        return folder
    clone = Path(__file__).resolve().parents[3] / "hub"
    return clone if (clone / MANIFEST).is_file() else None


def _read_manifest(folder: Path) -> dict[str, ZooEntry]:
    import tomllib

    path = folder / MANIFEST
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the zoo manifest: {exc}") from None
    if raw.get("format") != FORMAT or set(raw) - {"format", "models"}:
        raise ConfigError(f"{path}: expected `format = {FORMAT}` and [models.\"<name>\"] tables, got keys {sorted(raw)}")
    out = {}
    for name, table in raw.get("models", {}).items():
        if not _NAME.match(name):
            raise ConfigError(f"{path}: models.{name!r}: names are <arch>-<dataset>[-<recipe>], lowercase (like 'hrnet_l-camvid')")
        if not isinstance(table, Mapping) or {"name", "base"} & set(table):
            raise ConfigError(f"{path}: models.{name!r} must be a table of entry keys")
        where = f"{path} [models.\"{name}\"]"
        entry = structure_table(table, ZooEntry, registry=Registry(), source=where)
        if (entry.folder or entry.revision) and not entry.sha256:
            raise ConfigError(f"{where}: an entry with a folder or a revision needs the sha256 of its model.safetensors "
                              "(sha256sum; segcore hub save prints it)")  # fmt: skip
        if entry.revision and not entry.repo_id:
            raise ConfigError(f"{where}: revision needs repo_id")
        out[name] = attrs.evolve(entry, name=name, base=folder)
    return out


def zoo(registry: Registry | None = None) -> dict[str, ZooEntry]:
    """Every pretrained name: the manifest's entries, then those plugins register (a manifest entry wins)."""
    folder = zoo_dir()
    entries = _read_manifest(folder) if folder is not None else {}
    for name, p in (registry.pretrained() if registry is not None else {}).items():
        if name not in entries:
            entries[name] = ZooEntry(plugin=p.plugin.name, dataset="", repo_id=p.repo_id, revision=p.revision,
                                     sha256=p.sha256, name=name)  # fmt: skip
    return dict(sorted(entries.items()))


def is_pretrained_name(source: str) -> bool:
    """Whether *source* (not an existing path) names a pretrained model rather than a file: ``hf-hub:owner/name``, or a
    bare name like ``hrnet_l-camvid`` (no folder separator, no ``.safetensors`` suffix)."""
    if source.startswith("hf-hub:"):
        return True
    if Path(source).expanduser().exists() or source.startswith((".", "~")) or source.endswith((".safetensors", ".toml")):
        return False
    return "/" not in source and os.sep not in source and bool(source)


# -- where a model's files are --------------------------------------------------------------------------------------


def _offline() -> bool:
    from huggingface_hub import constants

    # huggingface-hub reads the variable once, at import; reading it again here honours a later `export`
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


@frozen
class _Source:
    """A model folder, local or a Hub repo at a revision; *label* is what messages call it."""

    label: str
    folder: Path | None = None
    repo_id: str | None = None
    revision: str | None = None
    entry: ZooEntry | None = None  # the zoo entry whose sha256 pins the weights (None: nothing to compare with)

    def fetch(self, filename: str) -> Path:
        if self.folder is not None:
            path = self.folder / filename
            if not path.is_file():
                hint = ""
                if filename == CONFIG and (self.folder / "run.json").is_file():
                    hint = f" It is a run folder: make a model folder from it with `segcore hub save {self.folder} <out>`."
                raise DamagedFileError(f"{path}: missing; a model folder holds {CONFIG}, {WEIGHTS} and {CARD}.{hint}")
            return path
        return _download(self.repo_id, filename, self.revision, self.label)


def _download(repo_id: str, filename: str, revision: str | None, label: str) -> Path:
    """One file of a Hub model repo through huggingface-hub's cache (offline: the cache only, no request at all)."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )  # fmt: skip

    from segcore._version import __version__
    from segcore.model.pretrained import hub_reachable

    offline = _offline()
    local = offline or not hub_reachable()  # an unreachable Hub: the cache alone, instead of a minute of retries
    at = f"{repo_id} at revision {revision or 'main'}"
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=local,
                                    library_name="segcore", library_version=__version__))  # fmt: skip
    except LocalEntryNotFoundError:
        fetch = f"hf download {repo_id} {CONFIG} {WEIGHTS} {CARD}" + (f" --revision {revision}" if revision else "")
        if offline:
            raise ConfigError(
                f"{label}: {filename} of {at} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                f"HF_HUB_OFFLINE=1 forbids downloading it. On a machine with network run `{fetch}` (same HF_HUB_CACHE), "
                "or unset HF_HUB_OFFLINE."
            ) from None
        raise ConfigError(f"{label}: {filename} of {at} is not cached and the Hub cannot be reached; check the network, "
                          f"or fill the cache elsewhere with `{fetch}` and set HF_HUB_OFFLINE=1.") from None  # fmt: skip
    except RevisionNotFoundError:
        raise ConfigError(f"{label}: the Hub repo {repo_id} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"{label}: no Hub model repo {repo_id!r} (or it is private: log in with `hf auth login`)") from None
    except EntryNotFoundError:
        raise ConfigError(f"{label}: {at} has no {filename}; it is not a segcore model repo (push one with "
                          "`segcore hub push`)") from None  # fmt: skip
    except HfHubHTTPError as exc:
        raise ConfigError(f"{label}: downloading {filename} of {at} failed: {exc}") from None


def _not_published(entry: ZooEntry) -> ConfigError:
    recipe = entry.path(entry.recipe)
    train = (f" Its recipe is {recipe}: train it with `segcore run {recipe}`, then `segcore hub save <run folder> "
             f"hub/models/{entry.name} --name {entry.name}` and add the printed lines to the manifest.") if recipe else ""  # fmt: skip
    why = f" ({entry.reason})" if entry.reason else ""
    return ConfigError(f"{entry.name}: weights not published{why}.{train}")


def _locate(name_or_path: str | Path, revision: str | None, registry: Registry | None) -> _Source:
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        if revision is not None:
            raise ConfigError(f"{text}: revision={revision!r} applies to Hub repos; a local folder has none")
        return _Source(text, folder=path)
    if path.is_file():
        raise ConfigError(f"{text}: is a file; from_pretrained takes a model folder ({CONFIG} + {WEIGHTS}), a "
                          "pretrained name or a Hub repo id. Bare weights load with [model] init_from or run.checkpoint.")  # fmt: skip
    if text.startswith("hf-hub:"):
        repo, _, rev = text.removeprefix("hf-hub:").partition("@")
        return _Source(text, repo_id=repo, revision=revision or rev or None)
    entries = zoo(registry)
    entry = entries.get(text)
    if entry is not None:
        if revision is not None and revision != entry.revision:  # another revision: the manifest's sha256 is not its
            if not entry.repo_id:
                raise ConfigError(f"{text}: revision={revision!r}, but this entry has no Hub repo")
            return _Source(text, repo_id=entry.repo_id, revision=revision)
        shipped = entry.path(entry.folder)
        if shipped is not None and shipped.is_dir():
            return _Source(text, folder=shipped, entry=entry)
        if entry.revision or (entry.repo_id and entry.base is None):  # a plugin's name: its repo, pinned or main
            return _Source(text, repo_id=entry.repo_id, revision=entry.revision, entry=entry)
        if shipped is not None:
            raise DamagedFileError(f"{text}: its shipped folder {shipped} is missing; restore it (git checkout -- {shipped})")
        raise _not_published(entry)
    if text.count("/") == 1 and not text.startswith(("/", ".", "~")):
        return _Source(text, repo_id=text, revision=revision)
    if "/" in text or os.sep in text or text.startswith((".", "~")):
        raise ConfigError(f"{text}: no such folder; give a model folder, a pretrained name or a Hub repo id (owner/name)")
    raise RegistryError(f"unknown pretrained model {text!r}{did_you_mean(text, entries)}; known: {', '.join(entries) or 'none'}"
                        " (`segcore hub list`), or give a model folder or a Hub repo id (owner/name)")  # fmt: skip


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (what ``sha256sum`` prints and the Hub shows as a file's LFS oid)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checked_weights(source: _Source) -> tuple[Path, dict[str, torch.Tensor]]:
    """The weights file and its tensors: integrity record first (truncated, altered), then the manifest's sha256."""
    path = source.fetch(WEIGHTS)
    tensors = read_weights(path)
    entry = source.entry
    if entry is not None and entry.sha256 is not None:
        got = file_sha256(path)
        pinned = f"the zoo manifest ({entry.base / MANIFEST})" if entry.base else f"plugin {entry.plugin!r} (add_pretrained)"
        if got != entry.sha256:
            raise DamagedFileError(
                f"{path}: sha256 {got} differs from {entry.sha256}, the one {pinned} pins for {entry.name}: the file "
                "was replaced, or the pin is out of date. Restore the file "
                "(git checkout, or delete it from the Hugging Face cache and load again); if you replaced it on purpose, "
                "put the new sha256 in the manifest."
            )
    return path, tensors


def weights_for(name: str, *, what: str = "[model] init_from", registry: Registry | None = None) -> Path:
    """The verified ``model.safetensors`` of pretrained *name* (``[model] init_from``, ``run.checkpoint``)."""
    try:
        source = _locate(name, None, registry if registry is not None else _default_registry())
    except RegistryError as exc:
        raise ConfigError(f"{what}: {name!r} is neither a file, a folder nor a pretrained name: {exc}") from None
    return _checked_weights(source)[0]


# -- config.json ----------------------------------------------------------------------------------------------------


def _read_config(path: Path, label: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DamagedFileError(f"{path}: not a readable {CONFIG} ({exc}); the model folder is damaged") from None
    if not isinstance(config, dict) or not isinstance(config.get("segcore"), dict):
        raise DamagedFileError(f"{path}: not a segcore model config (no 'segcore' table); was it written by save_pretrained?")
    if config["segcore"].get("format", 0) > FORMAT:
        raise ConfigError(f"{label}: {path} has format {config['segcore']['format']}, newer than this segcore reads "
                          f"({FORMAT}); upgrade: pip install -U segcore")  # fmt: skip
    missing = [k for k in ("model", "dataset", "plugins") if k not in config]
    if missing:
        raise DamagedFileError(f"{path}: lacks {', '.join(missing)}; the model folder is damaged")
    return config


def _meta(config: Mapping[str, Any]) -> DatasetMeta:
    d = config["dataset"]
    return DatasetMeta(tuple(d["class_names"]), tuple(tuple(c) for c in d["palette"]), int(d["ignore_index"]))


def _component_specs(cfg: ModelConfig) -> list[tuple[type, str]]:
    """(stage, name) of every component the inference model builds (training-only heads excluded)."""
    out: list[tuple[type, str]] = [(Backbone, cfg.backbone.name)]
    for spec in cfg.enhancers:
        out += [(Enhancer, spec.name), *((Attention, a.name) for a in spec.attention.values())]
    out += [(Decoder, cfg.decoder.name), *((Attention, a.name) for a in cfg.decoder.attention.values())]
    out += [(Attention, a.name) for a in cfg.attention.values()]
    return list(dict.fromkeys(out))


def _plugins(cfg: ModelConfig, registry: Registry) -> list[dict[str, Any]]:
    """The plugins providing the model's components: name, distribution, version and what each provides."""
    by_plugin: dict[str, dict[str, Any]] = {}
    for stage, name in _component_specs(cfg):
        p = registry.get(stage, name).plugin
        rec = by_plugin.setdefault(p.name, {"plugin": p.name, "distribution": p.dist, "version": p.version, "provides": []})
        rec["provides"].append(f"{stage.__name__.lower()} {name}")
    return list(by_plugin.values())


def _plugin_dir(dist: str) -> str | None:
    """``plugins/<dir>`` of a clone holding distribution *dist* (for the editable-install hint)."""
    root = Path(__file__).resolve().parents[3] / "plugins"
    for pyproject in sorted(root.glob("*/pyproject.toml")) if root.is_dir() else ():
        if re.search(rf'^name\s*=\s*"{re.escape(dist)}"', pyproject.read_text(encoding="utf-8"), re.M):
            return f"plugins/{pyproject.parent.name}"
    return None


def _check_plugins(config: Mapping[str, Any], registry: Registry, label: str) -> None:
    """Every component the model needs is registered, by the distribution that saved it: else the install line."""
    disabled = {n.strip() for n in os.environ.get("SEGCORE_DISABLE_PLUGINS", "").split(",") if n.strip()}
    problems = []
    for rec in config["plugins"]:
        missing, foreign = [], []
        for item in rec["provides"]:
            stage_name, _, name = item.partition(" ")
            try:
                entry = registry.get(_STAGES[stage_name], name)
            except RegistryError:
                missing.append(item)
                continue
            if rec.get("distribution") and entry.plugin.dist and entry.plugin.dist != rec["distribution"]:
                foreign.append(f"{item} comes from {entry.plugin.dist} here")
            elif rec.get("version") and entry.plugin.version and entry.plugin.version != rec["version"]:
                warnings.warn(f"{label} was saved with {rec['distribution']} {rec['version']}; {entry.plugin.version} is "
                              "installed (a different version may build a different model)", stacklevel=3)  # fmt: skip
        dist, version = rec.get("distribution") or rec["plugin"], rec.get("version")
        if missing:
            why = "is not installed"
            if rec["plugin"] in disabled:
                why = f"is disabled (SEGCORE_DISABLE_PLUGINS={os.environ['SEGCORE_DISABLE_PLUGINS']}): remove {rec['plugin']} from it"
            failed = [str(p) for p in registry.problems if f'"{rec["plugin"]}"' in str(p)]
            if failed:
                why = f"failed to load ({failed[0]})"
            local = _plugin_dir(dist)
            problems.append(
                f"it needs {', '.join(missing)} from plugin {rec['plugin']!r} ({dist} {version}), which {why}. Install it: "
                f'pip install "{dist}=={version}"' + (f" (in a clone of segcore: pip install -e {local})" if local else "")
            )
        if foreign:
            problems.append(f"it was saved with {dist} {version}, but {'; '.join(foreign)}: install {dist}, or disable the "
                            "other plugin with SEGCORE_DISABLE_PLUGINS")  # fmt: skip
    if problems:
        raise ConfigError(f"{label}: " + "; ".join(problems))


def _without_initial_weights(spec: Any) -> Any:
    """A component table that builds without fetching anything: ``pretrained = false``, ``weights`` unset (the model
    folder's weights replace whatever a component would load when it is built)."""
    cfg = spec.config
    if not attrs.has(type(cfg)):
        return spec
    names = {f.name for f in attrs.fields(type(cfg))}
    changes = {k: v for k, v in (("pretrained", False), ("weights", None)) if k in names and getattr(cfg, k) not in (v, None)}
    return attrs.evolve(spec, config=attrs.evolve(cfg, **changes)) if changes else spec


def inference_config(cfg: ModelConfig, num_classes: int) -> ModelConfig:
    """The ``[model]`` a model folder stores: no training-only heads, no init_from, nothing frozen, nothing fetched
    when built, the class count explicit."""
    return attrs.evolve(
        cfg, backbone=attrs.evolve(_without_initial_weights(cfg.backbone), frozen=False), aux={}, init_from=None,
        num_classes=num_classes, enhancers=tuple(_without_initial_weights(e) for e in cfg.enhancers),
        decoder=_without_initial_weights(cfg.decoder),
    )  # fmt: skip


# -- loading --------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _default_registry() -> Registry:
    from segcore.contracts.plugins import load_registry

    return load_registry()


def from_pretrained(name_or_path: str | Path, *, revision: str | None = None, num_classes: int | None = None,
                    registry: Registry | None = None) -> SegModel:  # fmt: skip
    """Load a pretrained name (``"hrnet_l-camvid"``), a model folder, or a Hub repo id (``"owner/name"``, or
    ``"hf-hub:owner/name@revision"``) as an eval-mode `SegModel` on the CPU.

    The model is built through the registry from the folder's config.json and its weights loaded strictly. It
    carries ``model.meta`` (class names, palette, ignore id) and ``model.hub_config`` (config.json), and normalises
    its input itself: `segcore.predict(model, image)` gives the label map at the image's size. With *num_classes*
    other than the saved count only the classifier starts fresh (``model.meta`` is then None). *revision* picks a
    Hub revision (branch, tag or commit); a name's default is the manifest's pinned one.
    """
    registry = registry if registry is not None else _default_registry()
    source = _locate(name_or_path, revision, registry)
    config_path = source.fetch(CONFIG)
    config = _read_config(config_path, source.label)
    _check_plugins(config, registry, source.label)  # before the weights are downloaded
    saved = structure_table(config["model"], ModelConfig, registry=registry, source=f"{config_path} [model]")
    count = saved.num_classes
    if count is None or count != len(config["dataset"]["class_names"]):
        raise DamagedFileError(f"{config_path}: [model] num_classes {count} differs from the dataset's "
                               f"{len(config['dataset']['class_names'])} class names; the config is damaged")  # fmt: skip
    n = count if num_classes is None else num_classes
    if n <= 0:
        raise ConfigError(f"num_classes must be > 0, got {n}")
    model = build_model(attrs.evolve(saved, num_classes=n), registry, num_classes=n)
    path, tensors = _checked_weights(source)
    fresh = [k for k in _classifier_keys(model) if k in tensors and n != count]
    versions = ", ".join(f"{p.get('distribution')} {p.get('version')}" for p in config["plugins"])
    apply_weights(model, {k: v for k, v in tensors.items() if k not in fresh}, source=path, ignore_missing=fresh,
                  hint=f"{CONFIG} and {WEIGHTS} of {source.label} do not describe the same model: one of them was edited "
                       f"or replaced, or the installed plugins build another architecture than those it was saved with "
                       f"({versions}).")  # fmt: skip
    model.meta = _meta(config) if n == count else None
    model.hub_config = config
    return model.eval()


def _flat(table: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(table, Mapping):
        out: dict[str, Any] = {}
        for k, v in table.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    return {prefix: table}


def load_for_pipeline(model_cfg: ModelConfig, name: str, registry: Registry, meta: DatasetMeta) -> SegModel:
    """``run.checkpoint = "<pretrained name>"``: the pretrained model, once the pipeline's ``[model]`` is shown to be
    the one it was saved with (a pipeline never states another model than the one evaluated)."""
    model = from_pretrained(name, registry=registry)
    theirs = _flat(model.hub_config["model"])
    mine = _flat(json.loads(json.dumps(unstructure(inference_config(model_cfg, model_cfg.num_classes or meta.num_classes)))))
    diff = sorted(k for k in theirs.keys() | mine.keys() if theirs.get(k, "(absent)") != mine.get(k, "(absent)"))
    if diff:
        shown = "; ".join(f"model.{k}: the pipeline has {mine.get(k, '(absent)')!r}, {name} {theirs.get(k, '(absent)')!r}"
                          for k in diff[:6])  # fmt: skip
        raise ConfigError(
            f"run.checkpoint = {name!r}: the pipeline's [model] is not the model {name} was saved with ({shown}"
            f"{'; ...' if len(diff) > 6 else ''}). Start the pipeline from its recipe (base = \"<recipe>.toml\") or copy "
            f"[model] from its {CONFIG}."
        )
    if model.meta is not None and model.meta.class_names != meta.class_names:
        warnings.warn(f"{name} predicts classes {model.meta.class_names}, the dataset names {meta.class_names}", stacklevel=2)
    return model


# -- saving ---------------------------------------------------------------------------------------------------------


def _cast(tensors: Mapping[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"dtype must be 'float32', 'bfloat16' or 'float16', got {dtype!r}")
    target = getattr(torch, dtype)
    return {k: v.to(target) if v.is_floating_point() else v for k, v in tensors.items()}


def _config(model: nn.Module, cfg: ModelConfig, meta: DatasetMeta, registry: Registry, *, name: str, dtype: str,
            dataset: str | None, input_size: Sequence[int] | None, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:  # fmt: skip
    from segcore._version import __version__

    return {
        "segcore": {"format": FORMAT, "version": __version__},
        "name": name,
        "model": unstructure(cfg),
        "dataset": {"name": dataset, "class_names": list(meta.class_names), "palette": [list(c) for c in meta.palette],
                    "ignore_index": meta.ignore_index},  # fmt: skip
        "input_size": list(input_size) if input_size else None,
        "plugins": _plugins(cfg, registry),
        "weights": {"dtype": dtype, "parameters": sum(p.numel() for p in model.parameters()),
                    "tensors_sha256": tensors_sha256(tensors)},  # fmt: skip
    }


def _guard(folder: Path) -> None:
    """Refuse to write a model folder over a run folder or a folder whose files segcore did not write."""
    if (folder / "run.json").exists():
        raise ConfigError(f"{folder} is a run folder; write the model folder elsewhere (segcore hub save {folder} <out>)")
    if folder.is_file():
        raise ConfigError(f"{folder} is a file; give a folder")
    config = folder / CONFIG
    if (folder / WEIGHTS).exists() or config.exists():
        try:
            ours = isinstance(json.loads(config.read_text(encoding="utf-8")).get("segcore"), dict)
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise ConfigError(f"{folder} holds {WEIGHTS} or {CONFIG} that save_pretrained did not write; segcore never "
                              "replaces them. Choose another folder.")  # fmt: skip


def _json(value: Any) -> Any:
    """NaN (a class absent from the labels) as null: config.json stays standard JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value


def _write_folder(folder: Path, model: nn.Module, cfg: ModelConfig, meta: DatasetMeta, registry: Registry, *,
                  name: str, dtype: str, dataset: str | None, input_size: Sequence[int] | None,
                  extra: Mapping[str, Any] | None = None, files: Mapping[str, Path] | None = None,
                  before_card=None) -> Path:  # fmt: skip
    folder = Path(folder)
    _guard(folder)
    cfg = inference_config(cfg, model.num_classes)
    tensors = _cast(inference_state_dict(model), dtype)
    config = _config(model, cfg, meta, registry, name=name, dtype=dtype, dataset=dataset, input_size=input_size,
                     tensors=tensors)  # fmt: skip
    with atomic_dir(folder) as tmp:
        save_weights(tensors, tmp / WEIGHTS, metadata={"segcore.model": name})
        for target, src in (files or {}).items():
            shutil.copyfile(src, tmp / target)
        if before_card is not None:  # evaluate the stored weights before the card states their metrics
            extra = {**(extra or {}), **before_card(tmp)}
        config.update(_json(dict(extra or {})))
        write_text(tmp / CONFIG, json.dumps(config, indent=1) + "\n")
        write_text(tmp / CARD, render_card(config, files=sorted({WEIGHTS, CONFIG, *(files or {})})))
    return folder


def save_pretrained(model: nn.Module, folder: str | Path, *, meta: DatasetMeta | None = None, dtype: str = "float32",
                    name: str | None = None, dataset: str | None = None, input_size: Sequence[int] | None = None,
                    registry: Registry | None = None) -> Path:  # fmt: skip
    """Write *model* as a model folder (``model.safetensors``, ``config.json``, ``README.md``); returns the folder.

    The model knows its ``[model]`` config when `build_model` or `from_pretrained` made it; *meta* (class names,
    palette, ignore id) defaults to ``model.meta``. *dtype* ``"bfloat16"`` halves the file (state the mIoU change:
    `segcore hub save` measures it). Training-only heads are left out. A run folder becomes a model folder with its
    metrics, recipe and curve through `save_run` (``segcore hub save``).
    """
    cfg = getattr(model, "model_config", None)
    if not isinstance(cfg, ModelConfig):
        raise ConfigError("save_pretrained needs the model's [model] config: build the model with segcore.build_model "
                          "or load it with segcore.from_pretrained")  # fmt: skip
    meta = meta if meta is not None else getattr(model, "meta", None)
    if meta is None:
        raise ConfigError("save_pretrained needs the class names, palette and ignore id: pass meta=<dataset>.meta")
    if meta.num_classes != model.num_classes:
        raise ConfigError(f"meta has {meta.num_classes} classes, the model {model.num_classes}")
    hub_config = getattr(model, "hub_config", None) or {}
    registry = registry if registry is not None else _default_registry()
    return _write_folder(Path(folder), model, cfg, meta, registry, name=name or hub_config.get("name") or Path(folder).name,
                         dtype=dtype, dataset=dataset or hub_config.get("dataset", {}).get("name"),
                         input_size=input_size or hub_config.get("input_size"))  # fmt: skip


# -- a finished run -> a model folder with its card -----------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _training(cfg: PipelineConfig, records: list[dict[str, Any]], *, hardware: str | None, train_hours: float | None,
              cores: int | None, step: int | None) -> dict[str, Any]:  # fmt: skip
    """How the run trained: the recipe's settings, the time it took, the curve (eval and loss records)."""
    t, d = cfg.train, cfg.data
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    elapsed = [r["elapsed_s"] for r in train if isinstance(r.get("elapsed_s"), (int, float))]
    if train_hours is not None:
        hours, how = train_hours, "as given to segcore hub save"
    elif elapsed:
        hours, how = max(elapsed) / 3600, "logged wall-clock time of the run (training and its evaluations)"
    elif train and train[-1].get("img_s"):
        images = train[-1]["step"] * d.batch_size * t.grad_accum_steps
        hours, how = images / train[-1]["img_s"] / 3600, "estimated from the logged throughput (training steps only)"
    else:
        hours, how = None, "unknown"
    cores = cores or os.cpu_count() or 1
    backbone = cfg.model.backbone.config
    start = "from scratch"
    if getattr(backbone, "pretrained", False) or getattr(backbone, "weights", None):
        start = "ImageNet-pretrained backbone"
    if cfg.model.init_from:
        start = f"initialised from {cfg.model.init_from}"
    return {
        "steps": step if step is not None else (train[-1]["step"] if train else None),
        "budget": f"{t.iters} iterations" if t.iters else f"{t.epochs} epochs",
        "optimizer": t.optimizer, "lr": t.lr, "weight_decay": t.weight_decay, "schedule": t.schedule,
        "warmup_iters": t.warmup_iters, "batch_size": d.batch_size * t.grad_accum_steps, "amp": t.amp, "seed": t.seed,
        "augment": unstructure(d.augment), "losses": [unstructure(loss) for loss in cfg.loss],
        "aux_heads": sorted(cfg.model.aux), "start": start, "train_split": d.train_split,
        "hardware": hardware or f"{cores} CPU cores ({_cpu_model()})", "cores": cores,
        "hours": None if hours is None else round(hours, 3),
        "cpu_hours": None if hours is None else round(hours * cores, 3), "time_source": how,
        "curve": [{"step": r["step"], "mIoU": r.get("mIoU")} for r in evals],
        "loss": [{"step": r["step"], "loss": r.get("loss")} for r in train],
    }


def _eval_protocol(cfg: PipelineConfig, count: int) -> str:
    e = cfg.eval
    how = "whole images" if e.mode == "whole" else f"sliding {e.window[0]}x{e.window[1]} windows, stride {e.stride[0]}x{e.stride[1]}"
    tta = f", scales {list(e.scales)}" if tuple(e.scales) != (1.0,) else ""
    return (f"{cfg.data.val_split} split ({count} images), {how}{tta}{', + flip' if e.flip else ''}, float32 compute, "
            "scored at each label's resolution, the ignore id excluded; mIoU over the classes present in the labels "
            "(`segcore run` with task = \"evaluate\")")  # fmt: skip


def save_run(run_dir: str | Path, out: str | Path, *, name: str | None = None, dtype: str = "float32",
             evaluate: bool = True, hardware: str | None = None, train_hours: float | None = None,
             cores: int | None = None, registry: Registry | None = None, progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """A finished run folder -> model folder *out* with its card (``segcore hub save``); returns its config.json.

    With *evaluate* the stored weights are evaluated exactly as ``segcore run`` with task = "evaluate" does (the
    run's [data] and [eval]; float32 compute), so the card states what that command prints; with *dtype* other than
    float32 the run's float32 weights are evaluated too and the change is stated. Without, the metrics are those of
    the run's last evaluation (metrics.json: under the run's train.amp).
    """
    from segcore.data.datasets import dataset_meta
    from segcore.engine.report import RunLog
    from segcore.engine.run import run_pipeline
    from segcore.model.weights import load_weights

    run_dir, out = Path(run_dir), Path(out)
    missing = [f for f in ("run.json", "pipeline.toml", WEIGHTS) if not (run_dir / f).is_file()]
    if missing:
        raise ConfigError(f"{run_dir}: not a finished run folder (no {', '.join(missing)}); point at a run that ended "
                          "(its model.safetensors is written at the end)")  # fmt: skip
    name = name or out.name
    if not _NAME.match(name):
        raise ConfigError(f"name {name!r}: pretrained names are <arch>-<dataset>[-<recipe>], lowercase (like 'hrnet_l-camvid')")
    entry = zoo().get(name) if zoo_dir() is not None else None
    registry = registry if registry is not None else _default_registry()
    cfg = load_pipeline(run_dir / "pipeline.toml", registry=registry)
    meta = dataset_meta(cfg.data.dataset, registry)
    model = build_model(cfg.model, registry, num_classes=cfg.model.num_classes or meta.num_classes)
    load_weights(model, run_dir / WEIGHTS, ignore_missing=("aux.",))
    final = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    records = RunLog(run_dir, enabled=False).read() if (run_dir / "log.jsonl").is_file() else []

    def measure(checkpoint: Path) -> dict[str, Any]:
        run = attrs.evolve(cfg.run, task="evaluate", checkpoint=str(checkpoint), device="cpu")
        return run_pipeline(attrs.evolve(cfg, run=run), registry, progress=progress).metrics

    def metrics(folder: Path) -> dict[str, Any]:
        from segcore.data import datasets as data

        if hasattr(data, "build_split"):  # the [data] table's val set, whichever way it is drawn
            count = len(data.build_split(cfg.data, registry, "val"))
        else:
            count = len(data.build_dataset(cfg.data.dataset, registry, cfg.data.val_split))
        if evaluate:
            m = measure(folder)
            reference = measure(run_dir) if dtype != "float32" else m
            source = "the stored weights, evaluated by segcore hub save"
        elif final:
            m = reference = final["val"]
            source = f"the run's last evaluation (train.amp = {cfg.train.amp!r}), from metrics.json"
        else:
            return {}
        out_m = {"split": cfg.data.val_split, "protocol": _eval_protocol(cfg, count), "source": source,
                 "eval": unstructure(cfg.eval), **{k: m[k] for k in ("mIoU", "mAcc", "aAcc", "fwIoU")},
                 "IoU": dict(zip(meta.class_names, m["IoU"]))}  # fmt: skip
        if dtype != "float32" and evaluate:
            out_m["float32_mIoU"] = reference["mIoU"]
        return {"metrics": out_m}

    def card_info(folder: Path) -> dict[str, Any]:
        info = metrics(folder)
        info["training"] = _training(cfg, records, hardware=hardware, train_hours=train_hours, cores=cores,
                                     step=final.get("step"))  # fmt: skip
        info["saved"] = datetime.date.today().isoformat()
        if entry is not None and entry.summary:  # the zoo's one-line description heads the card
            info["summary"] = entry.summary
        return info

    files = {"pipeline.toml": run_dir / "pipeline.toml"}
    if (run_dir / "plots" / "curves.png").is_file():
        files["curves.png"] = run_dir / "plots" / "curves.png"
    _write_folder(out, model, cfg.model, meta, registry, name=name, dtype=dtype, dataset=cfg.data.dataset.name,
                  input_size=cfg.run.input_size, files=files, before_card=card_info)  # fmt: skip
    return json.loads((out / CONFIG).read_text())


def manifest_lines(out: Path, config: Mapping[str, Any]) -> str:
    """The manifest keys `segcore hub save` prints for the entry of the folder it wrote."""
    folder = zoo_dir()
    try:
        rel = str(Path(out).resolve().relative_to(folder.resolve())) if folder else str(Path(out).resolve())
    except ValueError:
        rel = str(Path(out).resolve())
    lines = [f'[models."{config["name"]}"]', f'folder = "{rel}"', f'sha256 = "{file_sha256(Path(out) / WEIGHTS)}"']
    m = config.get("metrics")
    if m:
        hours = config.get("training", {}).get("cpu_hours")
        extra = f', cpu_hours = {hours}' if hours is not None else ""
        f32 = f', float32_mIoU = {100 * m["float32_mIoU"]:.2f}' if "float32_mIoU" in m else ""
        lines.append(f'metrics = {{ split = "{m["split"]}", mIoU = {100 * m["mIoU"]:.2f}, aAcc = {100 * m["aAcc"]:.2f}, '
                     f'weights = "{config["weights"]["dtype"]}"{f32}{extra} }}')  # fmt: skip
    return "\n".join(lines)


# -- the model card -------------------------------------------------------------------------------------------------


def _template() -> string.Template:
    folder = zoo_dir() or Path(__file__).resolve().parents[3] / "hub"
    path = folder / "card_template.md"
    if path.is_file():
        return string.Template(path.read_text(encoding="utf-8"))
    return string.Template("---\n$yaml\n---\n\n# $title\n\n$summary\n\n$status\n\n$usage\n\n$architecture\n\n$dataset\n\n"
                           "$metrics\n\n$training\n\n$curve\n\n$files\n")  # fmt: skip


def _pct(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def _card_yaml(name: str, dataset: str | None, miou: float | None, split: str = "val") -> str:
    from huggingface_hub import EvalResult, ModelCardData

    results = None
    if miou is not None and dataset:
        results = [EvalResult(task_type="image-segmentation", dataset_type=dataset, dataset_name=dataset,
                              dataset_split=split, metric_type="mean_iou", metric_value=round(100 * miou, 2))]  # fmt: skip
    data = ModelCardData(library_name="segcore", pipeline_tag="image-segmentation", model_name=name if results else None,
                         tags=["segcore", "semantic-segmentation"], datasets=[dataset] if dataset else None,
                         eval_results=results)  # fmt: skip
    return data.to_yaml()


def _architecture(model_table: Mapping[str, Any], plugins: Sequence[Mapping[str, Any]], params: int | None,
                  input_size: Sequence[int] | None) -> str:  # fmt: skip
    rows = ["| stage | component | plugin |", "|---|---|---|"]
    for p in plugins:
        for item in p["provides"]:
            rows.append(f"| {item.split(' ', 1)[0]} | `{item.split(' ', 1)[1]}` | {p['plugin']} ({p.get('distribution')} {p.get('version')}) |")
    lines = ["\n".join(rows), ""]
    if params is not None:
        lines.append(f"Parameters (inference model): {params:,}.")
    lines.append(f"Input: RGB scaled to [0, 1], normalised inside the model with mean {list(model_table.get('mean', []))} "
                 f"and std {list(model_table.get('std', []))}; logits at the input size (any size)."
                 + (f" Trained and evaluated at {input_size[0]}x{input_size[1]}." if input_size else ""))  # fmt: skip
    import tomli_w

    lines += ["", "As a pipeline's `[model]` (config.json holds the same table):", "", "```toml",
              tomli_w.dumps({"model": dict(model_table)}).strip(), "```"]
    return "\n".join(lines)


def _classes(config: Mapping[str, Any]) -> str:
    d = config["dataset"]
    rows = [f"Dataset: {d.get('name') or 'unnamed'}; {len(d['class_names'])} classes, ignore id {d['ignore_index']}.", "",
            "| id | class | colour |", "|---|---|---|"]  # fmt: skip
    rows += [f"| {i} | {n} | {tuple(c)} |" for i, (n, c) in enumerate(zip(d["class_names"], d["palette"]))]
    return "\n".join(rows)


def render_card(config: Mapping[str, Any], *, files: Sequence[str] = (CONFIG, WEIGHTS)) -> str:
    """The model card (README.md) of a model folder, from its config.json."""
    name = config.get("name") or "model"
    m, t = config.get("metrics") or {}, config.get("training") or {}
    dataset = (config.get("dataset") or {}).get("name")
    weights = config.get("weights", {})
    if m:
        iou = "\n".join(f"| {c} | {_pct(v)} |" for c, v in m.get("IoU", {}).items())
        bf16 = ""
        if "float32_mIoU" in m:
            change = 100 * (m["mIoU"] - m["float32_mIoU"])
            bf16 = (f"\n\nThe weights are stored in {weights.get('dtype')} to keep the file small; the same evaluation of "
                    f"the float32 weights gives mIoU {_pct(m['float32_mIoU'])} (change {change:+.2f}).")  # fmt: skip
        metrics = (f"| metric | value |\n|---|---|\n| mIoU | **{_pct(m['mIoU'])}** |\n| mAcc | {_pct(m.get('mAcc'))} |\n"
                   f"| aAcc | {_pct(m.get('aAcc'))} |\n| fwIoU | {_pct(m.get('fwIoU'))} |\n\nProtocol: {m.get('protocol')}. "
                   f"Source: {m.get('source')}.{bf16}\n\n| class | IoU |\n|---|---|\n{iou}")  # fmt: skip
    else:
        metrics = "Not evaluated (saved with save_pretrained outside a run)."
    if t:
        hours = "unknown" if t.get("hours") is None else f"{t['hours']:.2f} h wall clock, {t['cpu_hours']:.2f} CPU-core hours;"
        training = (
            f"- start: {t.get('start')}; {t.get('budget')} ({t.get('steps')} optimizer steps) on the "
            f"{t.get('train_split')} split, batch {t.get('batch_size')}\n"
            f"- optimizer {t.get('optimizer')}, lr {t.get('lr')}, weight decay {t.get('weight_decay')}, "
            f"{t.get('schedule')} schedule, {t.get('warmup_iters')} warm-up iterations, amp {t.get('amp')}, seed {t.get('seed')}\n"
            f"- augmentation: `{json.dumps(t.get('augment'))}`\n"
            f"- losses: `{json.dumps(t.get('losses'))}`"
            + (f"; training-only heads (not in these weights): {', '.join(t['aux_heads'])}" if t.get("aux_heads") else "")
            + f"\n- hardware: {t.get('hardware')}\n- time: {hours} {t.get('time_source')}\n\n"
            "The resolved training pipeline is `pipeline.toml` in this folder."
        )  # fmt: skip
        rows = "\n".join(f"| {r['step']} | {_pct(r.get('mIoU'))} |" for r in t.get("curve", []))
        losses = t.get("loss", [])
        picks = losses[:: max(1, math.ceil(len(losses) / 10))] + losses[-1:] if losses else []
        loss_rows = "\n".join(f"| {r['step']} | {r['loss']:.4f} |" for r in dict((r["step"], r) for r in picks).values()
                              if isinstance(r.get("loss"), (int, float)))  # fmt: skip
        image = "![loss and val mIoU](curves.png)\n\n" if "curves.png" in files else ""
        curve = (f"{image}Validation mIoU during training (the trainer's evaluations, under its amp setting):\n\n"
                 f"| step | val mIoU |\n|---|---|\n{rows}\n\nTraining loss:\n\n| step | loss |\n|---|---|\n{loss_rows}")  # fmt: skip
    else:
        training, curve = "Not recorded.", "Not recorded."
    sizes = {"model.safetensors": f"inference weights ({weights.get('dtype')}, no training-only heads) with segcore's "
             "integrity record", "config.json": "the inference [model] table, classes, palette, plugins and versions, "
             "metrics, training", "README.md": "this card", "pipeline.toml": "the resolved training pipeline",
             "curves.png": "loss and val mIoU curves"}  # fmt: skip
    values = {
        "yaml": _card_yaml(name, dataset, m.get("mIoU") if m else None, m.get("split", "val") if m else "val").strip(),
        "title": name,
        "summary": config.get("summary") or f"A segcore model{f' trained on {dataset}' if dataset else ''}.",
        "status": "" if not m else f"**val mIoU {_pct(m['mIoU'])}** ({m.get('split')} split).",
        "usage": (f"```python\nimport segcore\n\nmodel = segcore.from_pretrained(\"{name}\")  # a model folder, a zoo "
                  "name or a Hub repo id\nlabels = segcore.predict(model, image)  # (H, W, 3) uint8 RGB -> (H, W) class ids"
                  "\n```\n\nIn a pipeline: `[model] init_from = \"NAME\"` to fine-tune, `[run] checkpoint = \"NAME\"` with "
                  "task = \"evaluate\" or \"predict\".").replace("NAME", name),  # fmt: skip
        "architecture": _architecture(config["model"], config["plugins"], weights.get("parameters"), config.get("input_size")),
        "dataset": _classes(config),
        "metrics": metrics,
        "training": training,
        "curve": curve,
        "files": "\n".join(f"- `{f}`: {sizes.get(f, '')}" for f in files if f != CARD) + "\n- `README.md`: this card",
    }
    return _template().safe_substitute(values)


def render_zoo_card(entry: ZooEntry, registry: Registry) -> str:
    """The card of a zoo entry whose weights are not in this repository: what it is, its recipe, the paper's numbers."""
    from segcore.data.datasets import dataset_meta

    recipe = entry.path(entry.recipe)
    cfg = load_pipeline(recipe, registry=registry)
    meta = dataset_meta(cfg.data.dataset, registry)
    model_cfg = inference_config(cfg.model, cfg.model.num_classes or meta.num_classes)
    rel = f"hub/{entry.recipe}"
    paper = entry.paper
    metrics = "Not measured here."
    if paper:
        shown = ", ".join(f"{k} {v}" for k, v in paper.items() if k != "source")
        metrics = f"Reported by the paper (not measured here): {shown}" + (f" ({paper['source']})" if "source" in paper else "") + "."
    config = {"name": entry.name, "model": unstructure(model_cfg), "plugins": _plugins(model_cfg, registry),
              "dataset": {"name": entry.dataset, "class_names": list(meta.class_names), "palette": [list(c) for c in meta.palette],
                          "ignore_index": meta.ignore_index}, "input_size": list(cfg.run.input_size)}  # fmt: skip
    values = {
        "yaml": _card_yaml(entry.name, entry.dataset, None).strip(),
        "title": entry.name,
        "summary": entry.summary,
        "status": (f"**Weights not published** ({entry.reason}). `segcore.from_pretrained(\"{entry.name}\")` says so and "
                   f"points at the recipe."),  # fmt: skip
        "usage": (f"Train and publish (from the repository root, with the dataset where the recipe says):\n\n```bash\n"
                  f"segcore run {rel}\nsegcore hub save {cfg.run.out_dir} hub/models/{entry.name} --name {entry.name}\n```\n\n"
                  "then add the printed lines to hub/manifest.toml."),  # fmt: skip
        "architecture": _architecture(config["model"], config["plugins"], None, config["input_size"]),
        "dataset": _classes(config),
        "metrics": metrics,
        "training": f"The recipe: `{rel}` (training pipeline; its comments give the paper's settings and the departures).",
        "curve": "None yet (not trained).",
        "files": "None in this repository yet.",
    }
    return _template().safe_substitute(values)


# -- publishing -----------------------------------------------------------------------------------------------------


@frozen
class PushResult:
    repo_id: str
    revision: str  # the commit the upload made: pin it in the manifest
    url: str
    sha256: str  # of model.safetensors


def push_to_hub(folder_or_model: str | Path | nn.Module, repo_id: str, *, private: bool = False, token: str | None = None,
                commit_message: str = "segcore hub push") -> PushResult:  # fmt: skip
    """Upload a model folder (or a model, saved first with `save_pretrained`) as Hub model repo *repo_id*:
    ``HfApi().create_repo`` then ``upload_folder``. The folder is checked first (config.json, intact weights, card)."""
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory(prefix="segcore-push-") as tmp:
        if isinstance(folder_or_model, nn.Module):
            folder = save_pretrained(folder_or_model, Path(tmp) / "model")
        else:
            folder = Path(folder_or_model)
        if not folder.is_dir():
            raise ConfigError(f"{folder}: no such folder; push a folder written by save_pretrained or segcore hub save")
        _read_config(folder / CONFIG, str(folder))
        read_weights(folder / WEIGHTS)
        if not (folder / CARD).is_file():
            raise DamagedFileError(f"{folder / CARD}: missing; the model card is written with the folder (save_pretrained)")
        api = HfApi(token=token)
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message=commit_message, ignore_patterns=[".*"])  # fmt: skip
        return PushResult(repo_id, str(getattr(info, "oid", "")), str(getattr(info, "commit_url", info)),
                          file_sha256(folder / WEIGHTS))  # fmt: skip
