"""The mkdocs hook that builds segcore's site from the repository instead of copies of it.

- ``index.md`` is README.md (the repository's front page), its links into ``docs/`` made site-relative.
- ``plugins/<name>.md`` is one page per plugin: its README.md, then the figures and notes in its ``docs/`` folder.
- In any page, a line ``<!-- segcore:include PATH -->`` is replaced by the file at PATH (relative to the repository
  root; under a page title its own title is dropped and its headings move one level down),
  ``<!-- segcore:pipeline-reference -->`` by the pipeline reference generated from the attrs schema,
  ``<!-- segcore:cli-reference -->`` by every command's ``--help``, ``<!-- segcore:setup-commands -->`` by README's
  set-up commands. A marker that names a missing file fails the build.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).parent))
import reference  # noqa: E402  (a sibling module, not a package)

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger("mkdocs.plugins.segcore")
_MARKER = re.compile(r"^<!-- segcore:([a-z-]+)(?: (\S+))? -->$", re.M)
_LINK = re.compile(r"(\]\()([^)#\s]+)(#[^)\s]*)?\)")


def plugin_dirs() -> list[Path]:
    return sorted(p.parent for p in REPO.glob("plugins/*/README.md"))


def _page_of(repo_path: str) -> str | None:
    """The site page a repository file is shown on, if any."""
    if repo_path == "README.md":
        return "index.md"
    if repo_path == "CONTRIBUTING.md":
        return "plugins/writing.md"
    if repo_path.startswith("docs/") and repo_path.endswith(".md"):
        return repo_path.removeprefix("docs/")
    m = re.fullmatch(r"plugins/([^/]+)/README\.md", repo_path)
    return f"plugins/{m.group(1)}.md" if m else None


def _relink(text: str, source: str, page: str) -> str:
    """Links in *source* (a repository path) rewritten for *page* (a site path); a link to a repository file that is
    no page becomes its path in code (the site has no copy of it)."""
    import posixpath

    def sub(m: re.Match) -> str:
        target, anchor = m.group(2), m.group(3) or ""
        if re.match(r"^[a-z]+:", target) or target.startswith("/"):
            return m.group(0)
        repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(source), target))
        dest = _page_of(repo_path)
        if dest is None:
            return f"]({target}{anchor})" if source.startswith("docs/") else f"](#{repo_path}{anchor})"
        return f"]({posixpath.relpath(dest, posixpath.dirname(page) or '.')}{anchor})"

    text = _LINK.sub(sub, text)
    return re.sub(r"\[([^\]]+)\]\(#([^)]*/[^)]*)\)", r"\1 (`\2`)", text)  # file links with no page: plain text


def _shift_headings(text: str) -> str:
    """Drop the first ``# title`` and move every other heading one level down (outside code fences)."""
    out, fence, dropped = [], False, False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            if line.startswith("# ") and not dropped:
                dropped = True
                continue
            line = "#" + line
        out.append(line)
    return "\n".join(out) + "\n"


def setup_commands() -> str:
    block = re.search(r"^```bash\n(.*?)^```$", (REPO / "README.md").read_text(), flags=re.S | re.M)
    return f"```bash\n{block.group(1)}```"


_registry = None


def _installed_registry():
    global _registry
    if _registry is None:
        from segcore import get_plugin_manager, load_registry

        _registry = load_registry(get_plugin_manager())
    return _registry


def expand(markdown: str, page: str) -> str:
    """Replace the ``<!-- segcore:... -->`` markers of a page (site path *page*)."""

    def sub(m: re.Match) -> str:
        what, arg = m.group(1), m.group(2)
        markdown_above = markdown[: m.start()]
        if what == "include":
            path = REPO / arg
            if not path.is_file():
                raise FileNotFoundError(f"{page}: <!-- segcore:include {arg} --> names no file")
            text = _relink(path.read_text(), arg, page)
            titled = re.search(r"^# ", markdown_above, flags=re.M)
            return _shift_headings(text) if titled else text
        if what == "pipeline-reference":
            return reference.pipeline_reference(_installed_registry())
        if what == "cli-reference":
            return reference.cli_reference()
        if what == "setup-commands":
            return setup_commands()
        raise ValueError(f"{page}: unknown marker <!-- segcore:{what} -->")

    while m := _MARKER.search(markdown):  # one at a time: an include sees the page above it as expanded
        markdown = markdown[: m.start()] + sub(m) + markdown[m.end():]
    return markdown


def _plugin_page(folder: Path) -> str:
    name = folder.name
    parts = [f"<!-- segcore:include plugins/{name}/README.md -->", "",
             f"*This page is `plugins/{name}/README.md`; the figures and notes below are `plugins/{name}/docs/`.*", ""]
    extra = sorted((folder / "docs").glob("*")) if (folder / "docs").is_dir() else []
    notes = [p for p in extra if p.suffix == ".md"]
    figures = [p for p in extra if p.suffix in (".png", ".svg", ".jpg")]
    if figures:
        parts += ["## Figures", ""]
        for fig in figures:
            parts += [f"`docs/{fig.name}`", "", f"![{fig.stem}]({name}/{fig.name})", ""]
    for note in notes:
        parts += [f"<!-- segcore:include plugins/{name}/docs/{note.name} -->", ""]
    return "\n".join(parts)


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "index.md", content="<!-- segcore:include README.md -->\n"))
    for folder in plugin_dirs():
        files.append(File.generated(config, f"plugins/{folder.name}.md", content=_plugin_page(folder)))
        for fig in sorted((folder / "docs").glob("*.png")) if (folder / "docs").is_dir() else []:
            files.append(File.generated(config, f"plugins/{folder.name}/{fig.name}", abs_src_path=str(fig)))
    return files


def on_nav(nav, config, files):
    listed = {p.file.src_uri for p in nav.pages}
    for folder in plugin_dirs():
        if f"plugins/{folder.name}.md" not in listed:
            log.warning(f"plugins/{folder.name} has a README but no page in mkdocs.yml's nav: add plugins/{folder.name}.md")
    return nav


def on_page_markdown(markdown: str, page, config, files) -> str:
    return expand(markdown, page.file.src_uri)
