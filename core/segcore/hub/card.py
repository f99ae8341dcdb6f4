"""Model cards: huggingface_hub's `ModelCard.from_template` over segcore's template (package data,
``segcore/hub/card_template.md``), with `ModelCardData` metadata and the measured mIoU as a model-index `EvalResult`."""

from __future__ import annotations

__all__ = ["TEMPLATE", "render_card", "zoo_card"]

import json
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import tomli_w
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from segcore.hub.manifest import ZooEntry
from segcore.hub.sources import CARD, CONFIG, WEIGHTS

TEMPLATE = "card_template.md"



def _splits(split: Any) -> str:
    """A recorded train_split, one name or a list: "train split", "train + val splits"."""
    return f"{split} split" if isinstance(split, str) or split is None else f"{' + '.join(split)} splits"

def _render(data: ModelCardData, values: Mapping[str, str]) -> str:
    template = (resources.files("segcore.hub") / TEMPLATE).read_text(encoding="utf-8")
    text = ModelCard.from_template(data, template_str=template, **values).content
    return text if text.endswith("\n") else text + "\n"


def _pct(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def _card_data(name: str, dataset: str | None, miou: float | None, split: str = "val",
               metric_name: str | None = None) -> ModelCardData:  # fmt: skip
    """The card's metadata; a measured mIoU goes into the model-index as an `EvalResult` (*miou* a fraction)."""
    results = None
    if miou is not None and dataset:
        results = [EvalResult(task_type="image-segmentation", dataset_type=dataset, dataset_name=dataset,
                              dataset_split=split, metric_type="mean_iou", metric_value=round(100 * miou, 2),
                              metric_name=metric_name)]  # fmt: skip
    data = ModelCardData(library_name="segcore", pipeline_tag="image-segmentation", model_name=name if results else None,
                         tags=["segcore", "semantic-segmentation"], datasets=[dataset] if dataset else None,
                         eval_results=results)  # fmt: skip
    return data


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
    lines += ["", "As a pipeline's `[model]` (config.json holds the same table):", "", "```toml",
              tomli_w.dumps({"model": dict(model_table)}).strip(), "```"]
    return "\n".join(lines)


def _classes(config: Mapping[str, Any]) -> str:
    d = config["dataset"]
    rows = [f"Dataset: {d.get('name') or 'unnamed'}; {len(d['class_names'])} classes, ignore id {d['ignore_index']}.", "",
            "| id | class | colour |", "|---|---|---|"]  # fmt: skip
    rows += [f"| {i} | {n} | {tuple(c)} |" for i, (n, c) in enumerate(zip(d["class_names"], d["palette"]))]
    return "\n".join(rows)


def _evidence(ev: Mapping[str, Any]) -> str:
    """The card's account of a recipe's evidence (`segcore.tools.publish.read_evidence`), percentages as given."""

    def num(value: Any) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    seeds = ", ".join(num(v) for v in ev["miou"]["per_seed"].values())
    rows = "\n".join(f"| {c} | {num(v.get('mean'))} | {num(v.get('std'))} |" for c, v in ev.get("per_class", {}).items())
    hours = f"; {ev['cpu_hours']:.2f} CPU-core hours in all" if ev.get("cpu_hours") is not None else ""
    return (f"**Evidence for the recipe**: {ev['what']} (seeds {', '.join(map(str, ev['seeds']))} of `{ev.get('sweep')}`, "
            f"row '{ev['row']}'{_precisions(ev.get('precision') or {})}{hours}), each evaluated once at its end on {ev['split']}: mIoU "
            f"**{num(ev['miou']['mean'])} ± {num(ev['miou']['std'])}** (mean ± std; per seed {seeds}).\n\n"
            f"| class | IoU mean | std |\n|---|---|---|\n{rows}")  # fmt: skip


def _precisions(per_seed: Mapping[str, str | None]) -> str:
    """"; trained in bf16 (seed 0) and fp32 (seeds 1, 2)": what the evidence's seeds computed in (`read_evidence`),
    where known."""
    groups: dict[str, list[str]] = {}
    for seed, precision in per_seed.items():
        if precision:
            groups.setdefault(precision, []).append(seed)
    if not groups:
        return ""
    if len(groups) == 1 and sum(map(len, groups.values())) == len(per_seed):
        return f"; trained in {next(iter(groups))}"
    parts = [f"{p} (seed{'s' if len(s) > 1 else ''} {', '.join(s)})" for p, s in groups.items()]
    return "; trained in " + (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0])


def _status(m: Mapping[str, Any], ev: Mapping[str, Any] | None) -> str:
    if not m:
        return ""
    if "trained_on" not in m:
        return f"**val mIoU {_pct(m['mIoU'])}** ({m.get('split')} split)."
    text = f"**Trained on the {_splits(m['trained_on'])}**: no held-out score of its own."
    if ev:
        text += (f" The recipe, trained on {' + '.join(_train_splits(ev['train_split']))} alone: **{ev['split']} mIoU "
                 f"{ev['miou']['mean']:.2f} ± {ev['miou']['std']:.2f}** (mean ± std over {len(ev['seeds'])} seeds).")
    return text


def _train_splits(split: Any) -> list[str]:
    return [split] if isinstance(split, str) else list(split)


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
        held_in = ""
        if "trained_on" in m:
            held_in = (f"These weights trained on the {_splits(m['trained_on'])}, {m.get('split')} included: the scores "
                       f"below are on images they learned from, not a held-out result; they check that the stored "
                       f"weights are the trained ones.\n\n")  # fmt: skip
        metrics = held_in + (f"| metric | value |\n|---|---|\n| mIoU | **{_pct(m['mIoU'])}** |\n| mAcc | {_pct(m.get('mAcc'))} |\n"
                   f"| aAcc | {_pct(m.get('aAcc'))} |\n| fwIoU | {_pct(m.get('fwIoU'))} |\n\nProtocol: {m.get('protocol')}. "
                   f"Source: {m.get('source')}.{bf16}\n\n| class | IoU |\n|---|---|\n{iou}")  # fmt: skip
    else:
        metrics = "Not evaluated (saved with save_pretrained outside a run)."
    ev = config.get("evidence")
    if ev:
        metrics = _evidence(ev) + "\n\n" + metrics
    if t:
        hours = "unknown" if t.get("hours") is None else f"{t['hours']:.2f} h wall clock, {t['cpu_hours']:.2f} CPU-core hours;"
        training = (
            f"- start: {t.get('start')}; {t.get('budget')} ({t.get('steps')} optimizer steps) on the "
            f"{_splits(t.get('train_split'))}, batch {t.get('batch_size')}\n"
            f"- optimizer {t.get('optimizer')}, lr {t.get('lr')}, weight decay {t.get('weight_decay')}, "
            f"{t.get('schedule')} schedule, {t.get('warmup_iters')} warm-up iterations, amp {t.get('amp')}"
            f"{f' (computed in {p})' if (p := t.get('precision')) and t.get('amp') == 'auto' else ''}, seed {t.get('seed')}\n"
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
        "title": name,
        "summary": config.get("summary") or f"A segcore model{f' trained on {dataset}' if dataset else ''}.",
        "status": _status(m, ev),
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
    if ev:  # the held-out number is the recipe's
        data = _card_data(name, dataset, ev["miou"]["mean"] / 100, ev["split"], metric_name=f"mean IoU of {ev['what']}")
    elif m and "trained_on" not in m:
        data = _card_data(name, dataset, m["mIoU"], m.get("split", "val"))
    else:
        data = _card_data(name, dataset, None)
    return _render(data, values)


def zoo_card(entry: ZooEntry, config: Mapping[str, Any], *, out_dir: str) -> str:
    """The card of a zoo entry whose weights are not published, from the config.json its recipe would give."""
    rel = f"hub/{entry.recipe}"
    paper = entry.paper
    metrics = "Not measured here."
    if paper:
        shown = ", ".join(f"{k} {v}" for k, v in paper.items() if k != "source")
        metrics = f"Reported by the paper (not measured here): {shown}" + (f" ({paper['source']})" if "source" in paper else "") + "."
    values = {
        "title": entry.name,
        "summary": entry.summary,
        "status": (f"**Weights not published** ({entry.reason}). `segcore.from_pretrained(\"{entry.name}\")` says so and "
                   f"points at the recipe."),  # fmt: skip
        "usage": (f"Train and publish (from the repository root, with the dataset where the recipe says):\n\n```bash\n"
                  f"segcore run {rel}\nsegcore hub save {out_dir} hub/models/{entry.name} --name {entry.name}\n```\n\n"
                  "then add the printed lines to the zoo manifest (segcore/hub/zoo.toml)."),  # fmt: skip
        "architecture": _architecture(config["model"], config["plugins"], None, config["input_size"]),
        "dataset": _classes(config),
        "metrics": metrics,
        "training": f"The recipe: `{rel}` (training pipeline; its comments give the paper's settings and the departures).",
        "curve": "None yet (not trained).",
        "files": "None in this repository yet.",
    }
    return _render(_card_data(entry.name, entry.dataset, None), values)


