"""``segcore hub list|save|push|cards``: the model zoo."""

from __future__ import annotations

__all__ = ["add_parser", "cmd_hub_cards", "cmd_hub_evidence", "cmd_hub_list", "cmd_hub_push", "cmd_hub_save"]

import argparse
import os
from pathlib import Path

from segcore.cli import _common


def cmd_hub_list(args: argparse.Namespace) -> int:
    from segcore.hub.manifest import zoo

    entries = zoo(_common.registry())
    rows = [("name", "plugin", "dataset", "val mIoU", "weights", "recipe")]
    for name, e in entries.items():
        if e.metrics.get("evidence_mIoU") is not None:  # trained on val too: the recipe's train-only seeds
            miou = f"{e.metrics['evidence_mIoU']:.2f} ± {e.metrics['evidence_std']:.2f} (recipe, train only)"
        elif e.metrics.get("trained_on") and e.metrics.get("split") in e.metrics["trained_on"]:
            miou = "- (trained on val)"
        elif e.metrics.get("mIoU") is not None:
            miou = f"{e.metrics['mIoU']:.2f}"
        else:
            miou = f"({e.paper['mIoU']} paper)" if "mIoU" in e.paper else "-"
        recipe = e.path(e.recipe)  # None without SEGCORE_ZOO: the manifest's own relative path
        rows.append((name, e.plugin, e.dataset or "-", miou, e.status, os.path.relpath(recipe) if recipe else e.recipe or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def cmd_hub_save(args: argparse.Namespace) -> int:
    from segcore.tools.publish import manifest_lines, save_run

    config = save_run(args.run_dir, args.out, name=args.name, dtype=args.dtype, evaluate=not args.no_evaluate,
                      hardware=args.hardware, train_hours=args.train_hours, cores=args.cores, registry=_common.registry(),
                      progress=not args.quiet, evidence=args.evidence, evidence_row=args.evidence_row)  # fmt: skip
    m = config.get("metrics")
    if m:
        print(f"{m['split']} mIoU {100 * m['mIoU']:.2f} ({config['weights']['dtype']} weights)"
              + (f"; float32 weights: {100 * m['float32_mIoU']:.2f}" if "float32_mIoU" in m else "")
              + (f"; trained on {' + '.join(m['trained_on'])}: not a held-out score" if "trained_on" in m else ""))  # fmt: skip
    _print_evidence(config)
    print(f"wrote {args.out}/ (model.safetensors, config.json, README.md). Manifest lines (segcore/hub/zoo.toml, or "
          "$SEGCORE_ZOO/manifest.toml):\n")
    print(manifest_lines(Path(args.out), config))
    return 0


def _print_evidence(config: dict) -> None:
    ev = config.get("evidence")
    if ev:
        print(f"evidence ({ev['what']}): {ev['split']} mIoU {ev['miou']['mean']:.2f} ± {ev['miou']['std']:.2f}")


def cmd_hub_evidence(args: argparse.Namespace) -> int:
    from segcore.tools.publish import attach_evidence, manifest_lines

    config = attach_evidence(args.folder, args.table, row=args.row)
    _print_evidence(config)
    print(f"wrote {args.folder}/config.json and README.md (the weights unchanged). Manifest lines (segcore/hub/zoo.toml, "
          "or $SEGCORE_ZOO/manifest.toml):\n")
    print(manifest_lines(Path(args.folder), config))
    return 0


def cmd_hub_push(args: argparse.Namespace) -> int:
    from segcore.hub.publish import push_to_hub

    result = push_to_hub(args.folder, args.repo_id, private=args.private)
    print(f"pushed {args.folder} to {result.url}\nManifest lines:\n\nrepo_id = \"{result.repo_id}\"\n"
          f"revision = \"{result.revision}\"\nsha256 = \"{result.sha256}\"")  # fmt: skip
    return 0


def cmd_hub_cards(args: argparse.Namespace) -> int:
    from segcore.errors import ConfigError
    from segcore.hub.folder import render_zoo_card
    from segcore.hub.manifest import ZOO_VAR, zoo, zoo_dir
    from segcore.io import write_text

    registry = _common.registry()
    folder = zoo_dir()
    if folder is None:
        raise ConfigError(f"segcore hub cards writes <zoo folder>/cards/: set {ZOO_VAR} to it (in a clone: {ZOO_VAR}=hub)")
    written = 0
    for name, entry in zoo(registry).items():
        if entry.folder is None and entry.recipe is not None:
            write_text(folder / "cards" / f"{name}.md", render_zoo_card(entry, registry))
            written += 1
    print(f"wrote {written} cards to {folder / 'cards'}/")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    hub = sub.add_parser("hub", help="the model zoo: list it, make a model folder from a run, push one to the Hub")
    hsub = hub.add_subparsers(dest="hub_command", required=True, metavar="COMMAND")
    p = hsub.add_parser("list", help="every pretrained name: dataset, val mIoU, where its weights are, its recipe")
    p.set_defaults(func=cmd_hub_list)
    p = hsub.add_parser("save", help="a finished run folder -> a model folder with its card (evaluates the stored weights)")
    p.add_argument("run_dir", help="the run folder (run.out_dir of a finished training run)")
    p.add_argument("out", help="the model folder to write, e.g. hub/models/hrnet_l-camvid")
    p.add_argument("--name", help="the pretrained name (default: the folder's name)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="storage dtype of the weights (bfloat16 halves the file; both are evaluated and the change stated)")
    p.add_argument("--no-evaluate", action="store_true", help="state the run's last evaluation instead of evaluating")
    p.add_argument("--hardware", help="what it trained on, for the card (default: what the run's log names, else "
                   "this machine's cores and CPU)")
    p.add_argument("--train-hours", type=float, help="wall-clock hours it trained (default: from the run's log)")
    p.add_argument("--cores", type=_common.positive,
                   help="cores it trained on, for CPU hours (default: the run's log's, else this machine's)")
    p.add_argument("--evidence", metavar="TABLE_JSON", help="a segcore sweep table.json whose runs are this recipe "
                   "trained on fewer splits (train alone for a train + val model): the card gives their val mIoU over "
                   "seeds, per class; their pipelines must equal this run's but for the split, the seed and out_dir")
    p.add_argument("--evidence-row", metavar="NAME", help="the sweep row that is the evidence (default: its base row)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_hub_save)
    p = hsub.add_parser("evidence", help="put a recipe's train-only seeds (a segcore sweep table) on a model folder that "
                        "segcore hub save wrote without them; the weights stay as they are")  # fmt: skip
    p.add_argument("folder", help="the model folder (segcore hub save's output, e.g. hub/models/hrnet_l-camvid)")
    p.add_argument("table", metavar="TABLE_JSON", help="the segcore sweep table.json whose runs are the folder's recipe "
                   "(its pipeline.toml) trained on fewer splits, the seed folders beside it (their weights may be deleted)")
    p.add_argument("--row", metavar="NAME", help="the sweep row that is the evidence (default: its base row)")
    p.set_defaults(func=cmd_hub_evidence)
    _common.push_parser(hsub, "upload a model folder to the Hugging Face Hub (create_repo + upload_folder)", cmd_hub_push)
    p = hsub.add_parser("cards", help="rewrite hub/cards/<name>.md for the entries whose weights are not in the repository")
    p.set_defaults(func=cmd_hub_cards)
