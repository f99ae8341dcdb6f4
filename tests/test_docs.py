"""The documentation site's generated pages cannot drift from the code: the pipeline reference names every field of
the attrs schema with a help text, the CLI page every command, CONTRIBUTING every hook, mkdocs.yml's nav every
plugin. Fast: the generators are called directly, no mkdocs build (``.ci/run`` runs ``mkdocs build --strict``)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import attrs
import pytest

from segcore.config import schema

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_segcore_docs_{name}", REPO / "docs" / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference():
    return _load("reference")


def _sections(markdown: str) -> dict[str, str]:
    """``## `[table]``` heading -> the text under it."""
    parts = re.split(r"^## `([^`]+)`.*$", markdown, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _schema_classes() -> list[type]:
    """Every attrs class of the schema a pipeline file is structured into (ComponentSpec is only their base)."""
    classes = [getattr(schema, n) for n in schema.__all__]
    return [c for c in classes if attrs.has(c) and c is not schema.ComponentSpec]


def test_the_pipeline_reference_names_every_schema_field_with_its_help(reference):
    markdown = reference.pipeline_reference()
    sections = _sections(markdown)
    tables = {cls: name for name, cls, _ in reference.schema_tables()}
    missing = [c.__name__ for c in _schema_classes() if c not in tables]
    assert missing == [], f"schema classes with no table in the pipeline reference: {missing}"
    for cls, name in tables.items():
        rows = dict(re.findall(r"^\| `(\w+)` \|(.*)$", sections[name], flags=re.M))
        keys = [f.name for f in attrs.fields(cls) if not (issubclass(cls, schema.ComponentSpec) and f.name == "config")]
        assert [k for k in keys if k not in rows] == [], f"{name} ({cls.__name__}): fields missing from the reference"
        no_help = [k for k in keys if rows[k].rstrip().endswith("|  |")]
        assert no_help == [], (f"{name} ({cls.__name__}): no help text for {no_help}; add a comment beside the field "
                               f"in core/segcore/config/schema.py")  # fmt: skip


def test_the_pipeline_reference_gives_types_and_defaults(reference):
    sections = _sections(reference.pipeline_reference())
    assert "| `optimizer` | `\"sgd\"` \\| `\"adamw\"` | `\"sgd\"` | SGD (momentum, nesterov) or AdamW (betas) |" in sections["[train]"]
    assert "| `crop_size` | [integer, integer] | not set |" in sections["[data.augment]"]
    assert "| `name` | string | **required** |" in sections["[[loss]]"]
    assert "[`[model.attention.SLOT]`](#model-attention-slot)" in sections["[model.decoder]"]


def test_the_component_reference_lists_each_registered_config(reference, registry):
    markdown = "\n".join(reference.component_reference(registry))
    section = markdown.split("#### `fcn`", 1)[1].split("####", 1)[0]
    from segcore import Decoder

    for f in attrs.fields(registry.get(Decoder, "fcn").config):
        assert f"| `{f.name}` |" in section


def test_the_cli_reference_has_every_command(reference):
    from segcore.cli.main import make_parser

    markdown = reference.cli_reference()
    commands = [c for c in re.findall(r"^## `segcore (\S+)`$", markdown, flags=re.M)]
    parser_commands = next(a for a in make_parser()._actions if a.dest == "command").choices
    assert set(parser_commands) <= set(commands)
    assert "segcore run" in markdown and "--resume" in markdown


def test_contributing_documents_every_hook():
    """Every hookspec's signature is a heading of CONTRIBUTING.md (the site's "Writing a plugin" page)."""
    import inspect

    from segcore.contracts import hookspecs

    text = (REPO / "CONTRIBUTING.md").read_text()
    hooks = [n for n, f in vars(hookspecs).items() if n.startswith("segcore_") and callable(f)]
    for name in hooks:
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"### `{name}({params})`" in text, name


def test_every_plugin_has_a_page_in_the_nav():
    nav = (REPO / "mkdocs.yml").read_text()
    for readme in sorted(REPO.glob("plugins/*/README.md")):
        assert f"plugins/{readme.parent.name}.md" in nav, readme
