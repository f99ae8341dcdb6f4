"""Model folders: ``config.json`` (read, checked, written), the plugins a model needs, `save_pretrained`,
`from_pretrained` and ``run.checkpoint``'s pipeline check (STYLE.md section 6).

A model folder is a Hugging Face model repo:

- ``model.safetensors``: the inference weights (no training-only heads) with segcore's integrity record;
- ``config.json``: the inference ``[model]`` table (the stages, normalisation, class count), the dataset's class
  names, palette and ignore id, the input size, the plugins (distribution and version) whose components it uses,
  and, when it was saved from a run, the measured metrics with their protocol and how it was trained;
- ``README.md``: the model card; from a run also ``pipeline.toml`` (the resolved training pipeline) and ``curves.png``;
- ``.segcore-written.json``: what segcore wrote there (`segcore.io.WRITTEN`); saving again replaces only those files.

What a user names (a model folder, a run folder, a ``.safetensors`` file, a zoo name, a Hub repo id) is resolved by
`segcore.hub.sources.resolve_source`. Loading is strict and every check names what to do: a plugin the model needs
(the ``pip install`` line), tensors missing, unexpected or of another shape (by name), a sha256 that differs from
the manifest's, a damaged file, a name not cached while offline. Only ``num_classes=`` relaxes it: the classifier
starts fresh for another class count.
"""

from __future__ import annotations

__all__ = [
    "CARD", "CONFIG", "WEIGHTS", "from_pretrained", "inference_config", "load_for_pipeline", "load_source",
    "plugins_of", "render_zoo_card", "save_pretrained",
]  # fmt: skip

import functools
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import cattrs
import torch
from attrs import field, frozen
from torch import nn

from segcore._version import __version__
from segcore.config import ModelConfig, PipelineConfig, load_pipeline, structure_table, unstructure
from segcore.config.convert import format_errors, strict_converter
from segcore.contracts.plugins import DISABLE_VAR, get_plugin_manager, load_registry
from segcore.contracts.registry import Registry
from segcore.contracts.stages import STAGES, Attention, Backbone, DatasetMeta, Decoder, Enhancer
from segcore.contracts.validators import positive_size
from segcore.data.datasets import dataset_meta
from segcore.errors import ConfigError, DamagedFileError, RegistryError
from segcore.hub.card import render_card, zoo_card
from segcore.hub.manifest import FORMAT, ZooEntry
from segcore.hub.sources import CARD, CONFIG, WEIGHTS, Source, resolve_source
from segcore.io import atomic_dir, claim, record, write_text
from segcore.model.build import SegModel, _classifier_keys, build_model, inference_state_dict
from segcore.model.weights import apply_weights, read_weights, save_weights, tensors_sha256

_STAGES = {s.__name__.lower(): s for s in STAGES}
_PLUGIN_DIST = "segcore-plugin-"  # the distributions of plugins/<name> in a clone of segcore
_FOLDER_FILES = (WEIGHTS, CONFIG, CARD, "pipeline.toml", "curves.png")  # what save_pretrained and hub save write


# -- config.json ----------------------------------------------------------------------------------------------------


def _colour(_: Any, attribute: attrs.Attribute, palette: tuple[tuple[int, int, int], ...]) -> None:
    bad = [c for c in palette if not all(0 <= v <= 255 for v in c)]
    if bad:
        raise ValueError(f"{attribute.name}: colours are [r, g, b] from 0 to 255, got {list(bad[0])}")


@frozen
class _DatasetRecord:
    class_names: tuple[str, ...] = field(validator=attrs.validators.min_len(1))
    palette: tuple[tuple[int, int, int], ...] = field(validator=_colour)
    ignore_index: int
    name: str | None = None

    @palette.validator
    def _one_per_class(self, attribute: attrs.Attribute, palette: tuple[Any, ...]) -> None:
        if len(palette) != len(self.class_names):
            raise ValueError(f"palette: {len(palette)} colours for {len(self.class_names)} class names; give one per class")


def _provides(_: Any, attribute: attrs.Attribute, items: tuple[str, ...]) -> None:
    for item in items:
        stage, _, name = item.partition(" ")
        if stage not in _STAGES or not name:
            raise ValueError(f"provides: {item!r} is not '<stage> <name>' (stages: {', '.join(_STAGES)})")


@frozen
class _PluginRecord:
    plugin: str
    provides: tuple[str, ...] = field(validator=_provides)
    distribution: str | None = None
    version: str | None = None


@frozen
class _ConfigRecord:
    """The fields of config.json segcore reads (the rest, metrics and training, is shown, never computed with)."""

    model: dict[str, Any]
    dataset: _DatasetRecord
    plugins: tuple[_PluginRecord, ...]
    name: str | None = None
    input_size: tuple[int, int] | None = field(default=None, validator=attrs.validators.optional(positive_size))
    metrics: dict[str, Any] | None = None


@functools.cache
def _record_converter() -> Any:
    return strict_converter(forbid_extra_keys=False)  # keys a newer segcore adds are not an error


def _read_config(path: Path, label: str) -> dict[str, Any]:
    """config.json, every field segcore uses checked: a model folder is untrusted input (hand-edited, or from the Hub),
    and a wrong type anywhere is a DamagedFileError naming the file and the field, never a traceback later."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DamagedFileError(f"{path}: not a readable {CONFIG} ({exc}); the model folder is damaged") from None
    if not isinstance(config, dict) or not isinstance(config.get("segcore"), dict):
        raise DamagedFileError(f"{path}: not a segcore model config (no 'segcore' table); was it written by save_pretrained?")
    fmt = config["segcore"].get("format", 0)
    if isinstance(fmt, bool) or not isinstance(fmt, int):
        raise DamagedFileError(f"{path}: segcore.format must be an integer (this segcore writes {FORMAT}), got {fmt!r}; "
                               "the config was edited or damaged")  # fmt: skip
    if fmt > FORMAT:
        raise ConfigError(f"{label}: {path} has format {fmt}, newer than this segcore reads "
                          f"({FORMAT}); upgrade: pip install -U segcore")  # fmt: skip
    missing = [k for k in ("model", "dataset", "plugins") if k not in config]
    if missing:
        raise DamagedFileError(f"{path}: lacks {', '.join(missing)}; the model folder is damaged")
    arrays = {"dataset.class_names": ("dataset", "class_names"), "dataset.palette": ("dataset", "palette"),
              "plugins": ("plugins",), "input_size": ("input_size",)}  # cattrs would read a string as a sequence
    for where, keys in arrays.items():
        node: Any = config
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None and not isinstance(node, list) or (node is None and where != "input_size"):
            raise DamagedFileError(f"{path}: {where} must be a list, got {node!r}; the config was edited or damaged "
                                   "(restore it from the model's source)")  # fmt: skip
    for i, rec in enumerate(config["plugins"]):
        if isinstance(rec, dict) and not isinstance(rec.get("provides"), list):
            raise DamagedFileError(f"{path}: plugins[{i}].provides must be a list like [\"decoder fcn\"], got "
                                   f"{rec.get('provides')!r}; the config was edited or damaged")  # fmt: skip
    try:
        _record_converter().structure(config, _ConfigRecord)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise format_errors(exc, config, str(path), kind=f"{CONFIG} (edited by hand, or damaged: restore it from the "
                            "model's source, or fix the fields named)", error=DamagedFileError) from None  # fmt: skip
    for key in ("mIoU", "mAcc", "aAcc", "fwIoU"):  # shown with format specs by cards and `hub list`
        value = (config.get("metrics") or {}).get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise DamagedFileError(f"{path}: metrics.{key} must be a number or null, got {value!r}; the config was "
                                   "edited or damaged")  # fmt: skip
    return config


def _meta(config: Mapping[str, Any]) -> DatasetMeta:
    d = config["dataset"]
    return DatasetMeta(tuple(d["class_names"]), tuple(tuple(c) for c in d["palette"]), int(d["ignore_index"]))


def _component_specs(cfg: ModelConfig) -> list[tuple[type, str, str | None]]:
    """(stage, name, plugin key) of every component the inference model builds (training-only heads excluded)."""
    out: list[tuple[type, str, str | None]] = [(Backbone, cfg.backbone.name, cfg.backbone.plugin)]
    for spec in cfg.enhancers:
        out += [(Enhancer, spec.name, spec.plugin), *((Attention, a.name, a.plugin) for a in spec.attention.values())]
    out += [(Decoder, cfg.decoder.name, cfg.decoder.plugin),
            *((Attention, a.name, a.plugin) for a in cfg.decoder.attention.values())]
    out += [(Attention, a.name, a.plugin) for a in cfg.attention.values()]
    return list(dict.fromkeys(out))


def plugins_of(cfg: ModelConfig, registry: Registry) -> list[dict[str, Any]]:
    """The plugins providing the model's components: name, distribution, version and what each provides."""
    by_plugin: dict[str, dict[str, Any]] = {}
    for stage, name, plugin in _component_specs(cfg):
        p = registry.get(stage, name, plugin).plugin
        rec = by_plugin.setdefault(p.name, {"plugin": p.name, "distribution": p.dist, "version": p.version, "provides": []})
        rec["provides"].append(f"{stage.__name__.lower()} {name}")
    return list(by_plugin.values())


def _clone_folder(dist: str) -> str | None:
    """``plugins/<name>`` of a clone of segcore for the plugins it holds (``segcore-plugin-<name>``), from the
    distribution name config.json records (for the editable-install hint)."""
    return f"plugins/{dist.removeprefix(_PLUGIN_DIST)}" if dist.startswith(_PLUGIN_DIST) else None


def _check_plugins(config: Mapping[str, Any], registry: Registry, label: str) -> None:
    """Every component the model needs is registered, by the distribution that saved it: else the install line."""
    blocked = None
    problems = []
    for rec in config["plugins"]:
        missing, foreign = [], []
        for item in rec["provides"]:
            stage_name, _, name = item.partition(" ")
            try:
                stage = _STAGES[stage_name]  # a name two plugins register: the one it was saved with
                entry = registry.get(stage, name, rec["plugin"] if (stage, name) in registry.contested(stage) else None)
            except RegistryError:
                missing.append(item)
                continue
            if not entry.provided_by(rec.get("distribution")):  # a component that moved keeps its old provider
                foreign.append(f"{item} comes from {entry.plugin.dist} here")
            elif (rec.get("distribution") in (None, entry.plugin.dist) and rec.get("version") and entry.plugin.version
                  and entry.plugin.version != rec["version"]):  # fmt: skip
                warnings.warn(f"{label} was saved with {rec['distribution']} {rec['version']}; {entry.plugin.version} is "
                              "installed (a different version may build a different model)", stacklevel=3)  # fmt: skip
        dist, version = rec.get("distribution") or rec["plugin"], rec.get("version")
        if missing:
            why = "is not installed"
            blocked = blocked or get_plugin_manager(autoload=False)  # it blocks what DISABLE_VAR names
            if blocked.is_blocked(rec["plugin"]):
                why = f"is disabled ({DISABLE_VAR}={os.environ.get(DISABLE_VAR, '')}): remove {rec['plugin']} from it"
            failed = [str(p) for p in registry.problems if f'"{rec["plugin"]}"' in str(p)]
            if failed:
                why = f"failed to load ({failed[0]})"
            local = _clone_folder(dist)
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
    return load_registry()


def from_pretrained(name_or_path: str | Path, *, revision: str | None = None, num_classes: int | None = None,
                    registry: Registry | None = None) -> SegModel:  # fmt: skip
    """Load a model as an eval-mode `SegModel` on the CPU: a pretrained name (``"hrnet_l-camvid"``), a Hub repo id
    (``"owner/name"``, ``"hf-hub:owner/name@revision"``), a model folder, a run folder, or a ``.safetensors`` file
    beside its ``config.json`` or ``pipeline.toml`` (`segcore.hub.sources.resolve_source`).

    The model is built through the registry from the folder's config.json (a run's pipeline.toml) and its weights
    loaded strictly. It carries ``model.meta`` (class names, palette, ignore id) and ``model.hub_config``
    (config.json), and normalises its input itself: `segcore.predict(model, image)` gives the label map at the
    image's size. With *num_classes* other than the saved count only the classifier starts fresh (``model.meta`` is
    then None). *revision* picks a Hub revision (branch, tag or commit); a name's default is the manifest's pinned one.
    *registry* defaults to every installed plugin.
    """
    registry = registry if registry is not None else _default_registry()
    source = resolve_source(name_or_path, what="from_pretrained", registry=registry, revision=revision)
    return load_source(source, registry, num_classes=num_classes)[0]


def load_source(source: Source, registry: Registry, *, num_classes: int | None = None,
                ) -> tuple[SegModel, PipelineConfig | None]:  # fmt: skip
    """The eval-mode model of a resolved *source*, and the pipeline it was trained with where it has one (a run
    folder, or a ``.safetensors`` file beside a ``pipeline.toml``)."""
    beside = source.beside(CONFIG) if source.kind == "file" else None
    if source.has_config or beside is not None:
        return _from_config(source, beside or source.fetch(CONFIG), registry, num_classes), None
    pipeline = source.beside("pipeline.toml")
    if pipeline is None:
        raise ConfigError(f"{source.label}: {'a .safetensors file' if source.kind == 'file' else 'this folder'} holds "
                          f"weights only, and neither {CONFIG} nor pipeline.toml is beside it to say which model they "
                          "fit; give its model folder or run folder, or load the weights in a pipeline ([model] "
                          "init_from, run.checkpoint)")  # fmt: skip
    cfg = load_pipeline(pipeline, registry=registry)
    meta = dataset_meta(cfg.data.dataset, registry)
    count = cfg.model.num_classes or meta.num_classes
    n = _class_count(count, num_classes)
    model = build_model(cfg.model, registry, num_classes=n)
    path = source.weights()
    tensors = read_weights(path, require_record=False)  # a file written elsewhere loads with a warning
    fresh = [k for k in _classifier_keys(model) if k in tensors and n != count]
    apply_weights(model, {k: v for k, v in tensors.items() if k not in fresh}, source=path, ignore_missing=["aux.", *fresh],
                  hint=f"{source.label}: the weights do not fit the [model] of {pipeline}.")  # fmt: skip
    model.meta = meta if n == count else None
    return model.eval(), cfg


def _class_count(count: int, num_classes: int | None) -> int:
    n = count if num_classes is None else num_classes
    if n <= 0:
        raise ConfigError(f"num_classes must be > 0, got {n}")
    return n


def _from_config(source: Source, config_path: Path, registry: Registry, num_classes: int | None) -> SegModel:
    config = _read_config(config_path, source.label)
    _check_plugins(config, registry, source.label)  # before the weights are downloaded
    saved = structure_table(config["model"], ModelConfig, registry=registry, source=f"{config_path} [model]")
    count = saved.num_classes
    if count is None or count != len(config["dataset"]["class_names"]):
        raise DamagedFileError(f"{config_path}: [model] num_classes {count} differs from the dataset's "
                               f"{len(config['dataset']['class_names'])} class names; the config is damaged")  # fmt: skip
    n = _class_count(count, num_classes)
    model = build_model(attrs.evolve(saved, num_classes=n), registry, num_classes=n)
    path = source.weights()
    tensors = read_weights(path)
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


def _current_names(flat: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """Component names under their current names: a folder saved before a component was renamed (its old name now a
    deprecated alias, `Registry.add_alias`) is the same model as a pipeline that writes the new name."""
    names = {e.name for stage in STAGES for e in registry.entries(stage)}
    renamed = {old: new for stage in STAGES for old, new in registry.aliases(stage).items() if old not in names}
    return {k: renamed.get(v, v) if (k == "name" or k.endswith(".name")) and isinstance(v, str) else v
            for k, v in flat.items()}  # fmt: skip


def load_for_pipeline(model_cfg: ModelConfig, source: Source, registry: Registry, meta: DatasetMeta) -> SegModel:
    """``run.checkpoint`` = a model folder, a zoo name or a Hub repo: the model, once the pipeline's ``[model]`` is
    shown to be the one it was saved with (a pipeline never states another model than the one evaluated)."""
    model, _ = load_source(source, registry)
    name = source.text
    theirs = _current_names(_flat(model.hub_config["model"]), registry)
    mine = _current_names(_flat(json.loads(json.dumps(unstructure(inference_config(model_cfg, model_cfg.num_classes or meta.num_classes))))), registry)  # fmt: skip
    diff = sorted(k for k in theirs.keys() | mine.keys() if theirs.get(k, "(absent)") != mine.get(k, "(absent)"))
    if diff:
        shown = "; ".join(f"model.{k}: the pipeline has {mine.get(k, '(absent)')!r}, {name} {theirs.get(k, '(absent)')!r}"
                          for k in diff[:6])  # fmt: skip
        raise ConfigError(
            f"{source.what} = {name!r}: the pipeline's [model] is not the model {name} was saved with ({shown}"
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
    return {
        "segcore": {"format": FORMAT, "version": __version__},
        "name": name,
        "model": unstructure(cfg),
        "dataset": {"name": dataset, "class_names": list(meta.class_names), "palette": [list(c) for c in meta.palette],
                    "ignore_index": meta.ignore_index},  # fmt: skip
        "input_size": list(input_size) if input_size else None,
        "plugins": plugins_of(cfg, registry),
        "weights": {"dtype": dtype, "parameters": sum(p.numel() for p in model.parameters()),
                    "tensors_sha256": tensors_sha256(tensors)},  # fmt: skip
    }


def _guard(folder: Path, names: Sequence[str], what: str) -> None:
    """Refuse to write a model folder over a run folder, or over files segcore did not write (`segcore.io.claim`)."""
    if (folder / "run.json").exists():
        raise ConfigError(f"{folder} is a run folder; write the model folder elsewhere (segcore hub save {folder} <out>)")
    if folder.is_file():
        raise ConfigError(f"{folder} is a file; give a folder")
    try:  # a folder saved before segcore.io.WRITTEN: segcore's config.json vouches for the names it writes
        legacy = isinstance(json.loads((folder / CONFIG).read_text(encoding="utf-8")).get("segcore"), dict)
    except (OSError, ValueError, AttributeError):
        legacy = False
    claim(folder, names, what=what, ours=_FOLDER_FILES if legacy else (),
          hint="Choose another folder, or move those files away.")  # fmt: skip


def _json(value: Any) -> Any:
    """NaN (a class absent from the labels) as null: config.json stays standard JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value


def _write_config_and_card(folder: Path, config: Mapping[str, Any], *, files: Sequence[str]) -> None:
    """A model folder's config.json and its card (README.md) from it; *files* are the folder's files the card lists."""
    write_text(folder / CONFIG, json.dumps(config, indent=1) + "\n")
    write_text(folder / CARD, render_card(config, files=files))


def _write_folder(folder: Path, model: nn.Module, cfg: ModelConfig, meta: DatasetMeta, registry: Registry, *,
                  name: str, dtype: str, dataset: str | None, input_size: Sequence[int] | None,
                  extra: Mapping[str, Any] | None = None, files: Mapping[str, Path] | None = None,
                  before_card: Callable[[Path], Mapping[str, Any]] | None = None,
                  what: str = "save_pretrained") -> Path:  # fmt: skip
    folder = Path(folder)
    names = [WEIGHTS, CONFIG, CARD, *(files or {})]
    _guard(folder, names, what)
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
        _write_config_and_card(tmp, config, files=sorted({WEIGHTS, CONFIG, *(files or {})}))
    record(folder, names)
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
    cfg = getattr(model, "model_config", None)  # SegModel declares it; build_model and from_pretrained set it
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


# -- the card of a zoo entry without weights ------------------------------------------------------------------------


def render_zoo_card(entry: ZooEntry, registry: Registry) -> str:
    """The card of a zoo entry whose weights are not in the repository: what it is, its recipe, the paper's numbers."""
    recipe = entry.path(entry.recipe)
    if recipe is None:
        raise ConfigError(f"{entry.name}: its recipe ({entry.recipe}) is relative to the zoo folder; set SEGCORE_ZOO "
                          "(a clone's hub/)")  # fmt: skip
    cfg = load_pipeline(recipe, registry=registry)
    meta = dataset_meta(cfg.data.dataset, registry)
    model_cfg = inference_config(cfg.model, cfg.model.num_classes or meta.num_classes)
    config = {"name": entry.name, "model": unstructure(model_cfg), "plugins": plugins_of(model_cfg, registry),
              "dataset": {"name": entry.dataset, "class_names": list(meta.class_names), "palette": [list(c) for c in meta.palette],
                          "ignore_index": meta.ignore_index}, "input_size": list(cfg.run.input_size)}  # fmt: skip
    return zoo_card(entry, config, out_dir=cfg.run.out_dir)
