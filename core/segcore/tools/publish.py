"""A finished run -> an evaluated model folder with its card (``segcore hub save``).

Above the engine: the stored weights are evaluated exactly as ``segcore run`` with task = "evaluate" does
(`segcore.engine.run.run_pipeline`), and the run's log gives the card its curve; the folder itself is written by
the hub (`segcore.hub.folder`).
"""

from __future__ import annotations

__all__ = ["attach_evidence", "manifest_lines", "read_evidence", "save_run"]

import datetime
import json
import math
import platform
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import attrs

from segcore.config import PipelineConfig, load_pipeline, pipeline_as_today, unstructure
from segcore.contracts.plugins import load_registry
from segcore.contracts.registry import Registry
from segcore.data.datasets import build_split, dataset_meta
from segcore.engine.report import RunLog
from segcore.engine.rundir import NOT_IDENTITY_TRAIN_KEYS
from segcore.engine.run import run_pipeline
from segcore.errors import ConfigError, DamagedFileError, did_you_mean
from segcore.hub.folder import _FOLDER_FILES, CARD, CONFIG, WEIGHTS, _read_config, _write_config_and_card, _write_folder
from segcore.hub.manifest import NAME, zoo, zoo_dir
from segcore.hub.sources import file_sha256, resolve_source
from segcore.io import atomic_dir, cpuinfo, usable_cores
from segcore.model.build import build_model
from segcore.model.weights import load_weights


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
    # where it trained: the log's start records, unless the caller says (--hardware, --cores), else this machine
    logged = run_hardware(records)
    cpus = " then ".join(dict.fromkeys(r["cpu"] for r in records if r["kind"] == "start" and r.get("cpu")))
    cpus = cpus or cpuinfo("model name") or platform.processor() or platform.machine()
    if logged and cores is None:
        hardware, cores = hardware or logged.name, logged.cores
        core_hours = logged.core_hours if train_hours is None else None
    else:
        cores = cores or usable_cores()
        hardware, core_hours = hardware or f"{cores} CPU cores ({cpus})", None
    if core_hours is None and hours is not None:
        core_hours = hours * cores
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
        "warmup_iters": t.warmup_iters, "batch_size": d.batch_size * t.grad_accum_steps, "amp": t.amp,
        "precision": run_precision(records, t.amp), "seed": t.seed,
        "augment": unstructure(d.augment), "losses": [unstructure(loss) for loss in cfg.loss],
        "aux_heads": sorted(cfg.model.aux), "start": start, "train_split": d.train_split,
        "hardware": hardware, "cores": cores,
        "hours": None if hours is None else round(hours, 3),
        "cpu_hours": None if core_hours is None else round(core_hours, 3), "time_source": how,
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


# what may differ between a run and the runs that are its evidence (the same recipe trained on fewer splits); the
# precision too (train.amp "auto" is bf16 on one machine, fp32 on another): the evidence says what each seed used.
# Keys that are never a run's identity (segcore.engine.rundir.NOT_IDENTITY_TRAIN_KEYS) do not count either
EVIDENCE_MAY_DIFFER = ("data.train_split", "train.seed", "run.out_dir", "train.amp")
_AMP_PRECISION = {"bf16": "bf16", "none": "fp32"}


def run_precision(records: list[dict[str, Any]], amp: str | None) -> str | None:
    """What a run's training computed in: "bf16" or "fp32" for a fixed ``train.amp``; for ``"auto"`` its log's
    ``start`` records (one per session), "bf16 then fp32" for a run resumed on another machine, "unknown then ..."
    when steps were trained before the first start record (an older segcore); None when nothing says."""
    if amp in _AMP_PRECISION:
        return _AMP_PRECISION[amp]
    starts = [r for r in records if r["kind"] == "start" and isinstance(r.get("precision"), str)]
    if not starts:
        return None
    seen = list(dict.fromkeys(r["precision"] for r in starts))
    if any(r["kind"] == "train" and r["step"] <= starts[0]["step"] for r in records):
        seen.insert(0, "unknown")
    return " then ".join(seen)


class Hardware(NamedTuple):
    """Where a run trained (`run_hardware`)."""

    name: str  # "2 CPU cores (AMD EPYC 7B13)", "2 x NVIDIA H100 80GB HBM3"; sessions elsewhere joined with " then "
    cores: int  # the most cores a session had
    core_hours: float | None  # each session's logged hours times its cores; None when the log has no times


def run_hardware(records: list[dict[str, Any]]) -> Hardware | None:
    """What a run trained on, from its log's ``start`` records (one per session): the CPU and its cores, or the
    processes and the GPU; each session's hours (the ``elapsed_s`` of its train records, a clock that runs on across
    resumes) times its cores. None when a session is not on record (steps trained before the first start record, or
    start records without ``cores``: an older segcore): the caller says what it knows instead."""
    starts = [r for r in records if r["kind"] == "start"]
    if not starts or not all(isinstance(r.get("cores"), int) for r in starts):
        return None
    train = [r for r in records if r["kind"] == "train"]
    if any(r["step"] <= starts[0]["step"] for r in train):
        return None

    def name(r: dict[str, Any]) -> str:
        device = str(r.get("device", "cpu")).split(":")[0]
        if r.get("gpu") or device != "cpu":
            return f"{r.get('processes', 1)} x {r.get('gpu') or device}"
        return f"{r['cores']} CPU cores ({r.get('cpu')})"

    done = core_s = 0.0
    for start, end in zip(starts, [r["step"] for r in starts[1:]] + [math.inf]):
        times = [r["elapsed_s"] for r in train if start["step"] < r["step"] <= end and isinstance(r.get("elapsed_s"), (int, float))]  # fmt: skip
        if times:
            core_s += max(0.0, max(times) - done) * start["cores"]
            done = max(times)
    return Hardware(" then ".join(dict.fromkeys(map(name, starts))), max(r["cores"] for r in starts),
                    core_s / 3600 if done else None)  # fmt: skip


def _flat(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= _flat(value, path + ".")
        else:
            out[path] = value
    return out


def _splits(split: Any) -> list[str]:
    return [split] if isinstance(split, str) else list(split)


def read_evidence(table_json: str | Path, run_pipeline_toml: Path, *, row: str | None = None,
                  option: str = "--evidence", registry: Registry | None = None) -> dict[str, Any]:  # fmt: skip
    """The evidence for a run's recipe from a ``segcore sweep`` table: *row* (default: the base row) of
    *table_json*, whose runs must be the run's own pipeline but for `EVIDENCE_MAY_DIFFER` (each run's
    ``sweep_pipeline.toml`` is compared with *run_pipeline_toml*, both read as today's schema reads them,
    `pipeline_as_today`: seeds and model written before or after segcore gained a key compare equal). Returns what
    the card states: the val mIoU per seed, its mean and std, the per-class IoU mean and std, the split the evidence
    trained on, the CPU-hours."""
    registry = registry if registry is not None else load_registry()
    path = Path(table_json)
    where = f"{option} {path}".strip()  # how the user named the table, for the messages
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        rows = {r["name"]: r for r in table["rows"]}
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file; give the table.json that segcore sweep wrote in its out_dir") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{where}: not a segcore sweep table.json ({exc}); give the table.json that segcore sweep "
                          "wrote in its out_dir (segcore sweep FILE --table rebuilds it)") from None  # fmt: skip
    name = row or table.get("base_row") or next(iter(rows), None)
    if name not in rows:
        raise ConfigError(f"{where}: no row {name!r}{did_you_mean(str(name), list(rows))}; its rows: {', '.join(rows)}")
    entry = rows[name]
    seeds = sorted(entry["miou"]["per_seed"], key=int)
    if len(seeds) < 2:
        raise ConfigError(f"{where}: row {name!r} has {len(seeds)} finished run(s); evidence needs the mean and spread "
                          "of several seeds: finish the sweep (segcore sweep FILE --resume)")  # fmt: skip
    mine = _flat(pipeline_as_today(tomllib.loads(run_pipeline_toml.read_text(encoding="utf-8")), registry=registry))
    split, precision = None, {}
    for seed in seeds:
        their_file = path.parent / entry["folder"] / f"seed{seed}" / "sweep_pipeline.toml"
        if not their_file.is_file():
            raise ConfigError(f"{where}: {their_file} is missing: the table's run folders must be beside it")
        try:
            theirs = _flat(pipeline_as_today(tomllib.loads(their_file.read_text(encoding="utf-8")), registry=registry))
        except (ConfigError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: row {name!r} seed {seed}: {their_file} is not a pipeline this segcore reads "
                              f"({str(exc).splitlines()[0]}); evidence must be the same pipeline as the run") from None
        differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k) and k not in EVIDENCE_MAY_DIFFER
                        and k.removeprefix("train.") not in NOT_IDENTITY_TRAIN_KEYS)  # fmt: skip
        if differ:
            shown = "; ".join(f"{k}: {theirs.get(k, '(unset)')!r} there, {mine.get(k, '(unset)')!r} here" for k in differ[:6])
            raise ConfigError(f"{where}: row {name!r} seed {seed} is not this run's recipe ({shown}"
                              f"{'; ...' if len(differ) > 6 else ''}). Evidence must be the same pipeline, differing "
                              f"only in {', '.join(EVIDENCE_MAY_DIFFER)}")  # fmt: skip
        split = theirs.get("data.train_split", "train")
        try:
            records = RunLog(their_file.parent, enabled=False).read()
        except DamagedFileError:
            records = []
        precision[str(seed)] = run_precision(records, theirs.get("train.amp"))
    return {
        "what": "the same recipe trained on " + " + ".join(_splits(split)) + f" alone, {len(seeds)} seeds",
        "sweep": table.get("sweep"), "row": name, "train_split": split, "seeds": [int(s) for s in seeds],
        "split": "val", "miou": {"per_seed": entry["miou"]["per_seed"], "mean": entry["miou"]["mean"],
                                 "std": entry["miou"]["std"]},
        "per_class": entry.get("per_class_iou_pct", {}), "cpu_hours": entry.get("cpu_hours"),
        "precision": precision,
    }  # fmt: skip


def save_run(run_dir: str | Path, out: str | Path, *, name: str | None = None, dtype: str = "float32",
             evaluate: bool = True, hardware: str | None = None, train_hours: float | None = None,
             cores: int | None = None, registry: Registry | None = None, progress: bool = True,
             evidence: str | Path | None = None, evidence_row: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A finished run folder -> model folder *out* with its card (``segcore hub save``); returns its config.json.

    With *evaluate* the stored weights are evaluated exactly as ``segcore run`` with task = "evaluate" does (the
    run's [data] and [eval]; float32 compute), so the card states what that command prints; with *dtype* other than
    float32 the run's float32 weights are evaluated too and the change is stated. Without, the metrics are those of
    the run's last evaluation (metrics.json: under the run's train.amp).

    A run that trained on its validation split too (``data.train_split = ["train", "val"]``) has no held-out score
    of its own: the card says so, and *evidence* (a ``segcore sweep`` table.json whose *evidence_row* is this
    recipe trained on train alone, `read_evidence`) gives the recipe's val mIoU over seeds instead.
    """
    source = resolve_source(run_dir, what="segcore hub save")
    run_dir, out = Path(run_dir), Path(out)
    missing = [f for f in ("run.json", "pipeline.toml", WEIGHTS) if not (run_dir / f).is_file()]
    if source.kind != "run" or missing:
        raise ConfigError(f"{run_dir}: not a finished run folder (no {', '.join(missing)}); point at a run that ended "
                          "(its model.safetensors is written at the end)")  # fmt: skip
    name = name or out.name
    if not NAME.match(name):
        raise ConfigError(f"name {name!r}: pretrained names are <arch>-<dataset>[-<recipe>], lowercase (like 'hrnet_l-camvid')")
    entry = zoo().get(name)
    registry = registry if registry is not None else load_registry()
    cfg = load_pipeline(run_dir / "pipeline.toml", registry=registry)
    meta = dataset_meta(cfg.data.dataset, registry)
    model = build_model(cfg.model, registry, num_classes=cfg.model.num_classes or meta.num_classes)
    load_weights(model, run_dir / WEIGHTS, ignore_missing=("aux.",))
    final = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    evidence_info = None if evidence is None else read_evidence(evidence, run_dir / "pipeline.toml", row=evidence_row,
                                                                 registry=registry)
    records = RunLog(run_dir, enabled=False).read() if (run_dir / "log.jsonl").is_file() else []

    def measure(checkpoint: Path) -> dict[str, Any]:
        run = attrs.evolve(cfg.run, task="evaluate", checkpoint=str(checkpoint), device="cpu")
        return run_pipeline(attrs.evolve(cfg, run=run), registry, progress=progress).metrics

    def metrics(folder: Path) -> dict[str, Any]:
        count = len(build_split(cfg.data, registry, "val"))  # the [data] table's val set, whichever way it is drawn
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
        if cfg.data.val_split in _splits(cfg.data.train_split):
            out_m["trained_on"] = _splits(cfg.data.train_split)  # not a held-out score
        if dtype != "float32" and evaluate:
            out_m["float32_mIoU"] = reference["mIoU"]
        return {"metrics": out_m}

    def card_info(folder: Path) -> dict[str, Any]:
        info = metrics(folder)
        info["training"] = _training(cfg, records, hardware=hardware, train_hours=train_hours, cores=cores,
                                     step=final.get("step"))  # fmt: skip
        info["saved"] = datetime.date.today().isoformat()
        if evidence_info is not None:
            info["evidence"] = evidence_info
        if entry is not None and entry.summary:  # the zoo's one-line description heads the card
            info["summary"] = entry.summary
        return info

    files = {"pipeline.toml": run_dir / "pipeline.toml"}
    if (run_dir / "plots" / "curves.png").is_file():
        files["curves.png"] = run_dir / "plots" / "curves.png"
    _write_folder(out, model, cfg.model, meta, registry, name=name, dtype=dtype, dataset=cfg.data.dataset.name,
                  input_size=cfg.run.input_size, files=files, before_card=card_info, what="segcore hub save")  # fmt: skip
    return json.loads((out / CONFIG).read_text())


def attach_evidence(folder: str | Path, evidence: str | Path, *, row: str | None = None,
                    registry: Registry | None = None) -> dict[str, Any]:  # fmt: skip
    """Put a recipe's evidence (`read_evidence`) on a model folder that `save_run` wrote without it
    (``segcore hub evidence``): its config.json gains ``evidence`` and its card is written again; the weights and
    every other file stay as they are. For a train + val model whose train-only seeds finish after it shipped (or
    whose run folder is gone: the folder's own pipeline.toml is the recipe compared). Returns the new config.json."""
    folder = Path(folder)
    missing = [f for f in (CONFIG, WEIGHTS, "pipeline.toml") if not (folder / f).is_file()]
    if missing:
        raise ConfigError(f"{folder}: not a model folder written by segcore hub save (no {', '.join(missing)}); give the "
                          "folder that segcore hub save wrote (e.g. hub/models/hrnet_l-camvid)")  # fmt: skip
    config = _read_config(folder / CONFIG, "segcore hub evidence")
    if not isinstance(config.get("metrics"), dict):
        raise ConfigError(f"{folder / CONFIG}: has no metrics: evidence goes on a folder that segcore hub save "
                          "evaluated (not one that save_pretrained wrote)")  # fmt: skip
    config["evidence"] = read_evidence(evidence, folder / "pipeline.toml", row=row, option="", registry=registry)
    files = sorted(f for f in _FOLDER_FILES if f != CARD and (folder / f).is_file())
    with atomic_dir(folder) as tmp:  # config.json and the card change together; the rest is carried over
        _write_config_and_card(tmp, config, files=files)
    return config


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
        trained = f', trained_on = {json.dumps(m["trained_on"])}' if "trained_on" in m else ""
        ev = config.get("evidence")
        if ev:
            trained += (f', evidence_mIoU = {ev["miou"]["mean"]:.2f}, evidence_std = {ev["miou"]["std"]:.2f}, '
                        f'evidence_seeds = {len(ev["seeds"])}')  # fmt: skip
        lines.append(f'metrics = {{ split = "{m["split"]}", mIoU = {100 * m["mIoU"]:.2f}, aAcc = {100 * m["aAcc"]:.2f}, '
                     f'weights = "{config["weights"]["dtype"]}"{f32}{extra}{trained} }}')  # fmt: skip
    return "\n".join(lines)
