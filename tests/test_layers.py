"""The layers of core/segcore are checked, not wished for: import-linter's contract, no import cycle at all (module-
and function-level imports alike), a lazy package root, and nothing inside segcore on an old (aliased) module path."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "core" / "segcore"


@pytest.fixture(scope="module")
def graph():
    # grimp reads every import statement, those inside functions too; no on-disk cache (13 ms without one): the xdist
    # workers would share and race on .grimp_cache/ in the repository, and on a fresh clone both may create it
    return grimp.build_graph("segcore", cache_dir=None)


def _layers() -> list[str]:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in cfg["contracts"] if c["type"] == "layers"]
    return contract["layers"]


def test_the_layers_contract_holds(graph):
    layers = [grimp.Layer(*(part.strip() for part in layer.split("|"))) for layer in _layers()]
    broken = graph.find_illegal_dependencies_for_layers(layers=layers)
    chains = sorted(f"{', '.join(sorted(r.heads))} -> {', '.join(sorted(r.tails))}" for dep in broken for r in dep.routes)
    assert not broken, "imports against the layers:\n" + "\n".join(chains)


def test_every_core_module_sits_in_a_layer():
    named = {part.strip() for layer in _layers() for part in layer.split("|")}
    top = {p.stem for p in CORE.iterdir() if (p.suffix == ".py" or (p / "__init__.py").exists())}
    top -= {"__init__", "__main__", "_version", "_compat"}  # the package root and its plumbing
    assert sorted(f"segcore.{t}" for t in top if f"segcore.{t}" not in named) == []


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter[0]; counter[0] += 1; stack.append(root); on.add(root)  # noqa: E702
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]; counter[0] += 1; stack.append(nxt); on.add(nxt)  # noqa: E702
                    work.append((nxt, iter(edges.get(nxt, ()))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop(); on.discard(m); comp.append(m)  # noqa: E702
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_import_graph_has_no_cycle(graph):
    assert _cycles(graph) == []


def test_a_cycle_would_be_found():
    g = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        g.add_import(importer=a, imported=b)
    assert _cycles(g) == [["p.a", "p.b", "p.c"]]


def test_no_core_module_uses_an_old_module_path(graph):
    from segcore._compat import MOVED

    users = {old: sorted(graph.find_modules_that_directly_import(old)) for old in MOVED if old in graph.modules}
    assert {k: v for k, v in users.items() if v} == {}


def test_old_module_paths_are_the_moved_modules_and_warn():
    code = (
        "import warnings, importlib\n"
        "warnings.simplefilter('error')\n"
        "import segcore.contracts.stages as new\n"
        "try:\n"
        "    import segcore.stages\n"
        "except DeprecationWarning as w:\n"
        "    print('warned', w)\n"
        "warnings.simplefilter('ignore')\n"
        "import segcore.stages as old\n"
        "print(old is new)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "warned segcore.stages moved to segcore.contracts.stages" in out
    assert out.strip().endswith("True")


def test_import_segcore_is_lazy():
    code = (
        "import sys, segcore\n"
        "print(sorted(m for m in ('torch', 'kornia', 'timm', 'huggingface_hub') if m in sys.modules))\n"
        "from segcore import Decoder\n"
        "print(sorted(m for m in sys.modules if m.startswith('segcore.') and m.split('.')[1] in "
        "('engine', 'hub', 'inference', 'tools', 'cli')))\n"
        "print(segcore.Decoder is Decoder, 'create_model' in dir(segcore))\n"
    )
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert lines[:3] == ["[]", "[]", "True True"]


def test_loading_the_registry_imports_no_timm():
    """timm brings torchvision's model zoo (about as long to import as torch): every installed plugin registers
    without it, so commands on pipelines that build no timm model never pay for it."""
    code = ("import sys\nfrom segcore import load_registry\nregistry = load_registry()\n"
            "print(sorted(m for m in ('timm', 'torchvision') if m in sys.modules), len(registry.problems))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] 0"


def test_every_public_name_resolves():
    import segcore

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no public name goes through an old path
        missing = [name for name in segcore.__all__ if getattr(segcore, name, None) is None]
    assert missing == []
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        segcore.nope  # noqa: B018


PUBLIC_FOR_PLUGINS = {"segcore", "segcore.layers"}  # what a plugin's code may import (CONTRIBUTING.md)
PUBLIC_FOR_TESTS = PUBLIC_FOR_PLUGINS | {"segcore.pipeline", "segcore.hub", "segcore.cli.main", "segcore.errors",
                                         "segcore.testing"}  # fmt: skip


def _segcore_imports(path: Path) -> set[str]:
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "segcore":
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "segcore")
    return out


@pytest.mark.parametrize("kind", ["src", "tests"])
def test_plugins_import_only_the_public_tiers(kind):
    allowed = PUBLIC_FOR_PLUGINS if kind == "src" else PUBLIC_FOR_TESTS
    bad = {f"{p.relative_to(REPO)}: {m}" for p in REPO.glob(f"plugins/*/{kind}/**/*.py") for m in _segcore_imports(p)
           if m not in allowed}  # fmt: skip
    assert sorted(bad) == []
