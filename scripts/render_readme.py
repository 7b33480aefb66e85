"""README.md from the notebook settings.ini names (`readme_nb = index.ipynb`), as nbdev's quarto render would make it.

nbconvert's Markdown exporter, after nbdev's directives are applied: `#| hide` cells are left out, `#| echo: false`
keeps a cell's output only, `#| output: false` its code only, and the `#|` lines go. Links written for the notebook
(`../docs/ui.png`, from nbs/) are made relative to the repository root.

    python scripts/render_readme.py            # write README.md (make readme)
    python scripts/render_readme.py --check    # exit 1 when README.md is not what the notebook gives
"""

import argparse
import configparser
import re
import sys
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- Generated from {nb} by scripts/render_readme.py (`make readme`): edit the notebook, not this file. -->\n"


def readme_notebook(root: Path = ROOT) -> Path:
    "The notebook settings.ini names as the README's source."
    cfg = configparser.ConfigParser()
    cfg.read(root / "settings.ini")
    return root / cfg["DEFAULT"].get("nbs_path", "nbs") / cfg["DEFAULT"]["readme_nb"]


def _directives(src: str) -> set[str]:
    return {re.sub(r"\s+", " ", ln[3:].strip()) for ln in src.splitlines() if ln.startswith("#|")}


def _shown(nb):
    "The notebook as the README shows it: nbdev's directives applied, then removed."
    cells = []
    for c in nb.cells:
        d = _directives(c.source) if c.cell_type == "code" else set()
        if "hide" in d or "include: false" in d:
            continue
        if c.cell_type == "code":
            c.source = "\n".join(ln for ln in c.source.splitlines() if not ln.startswith("#|")).strip("\n")
            if "output: false" in d:
                c.outputs = []
            if "echo: false" in d:
                c.source = ""
        cells.append(c)
    nb.cells = cells
    nb.metadata["language_info"] = {"name": "python"}  # nbdev_clean drops it; the code blocks are ```python
    return nb


def render(root: Path = ROOT) -> str:
    "The README's text."
    path = readme_notebook(root)
    body, _ = MarkdownExporter(exclude_input_prompt=True, exclude_output_prompt=True).from_notebook_node(
        _shown(nbformat.read(path, as_version=4))
    )
    body = body.replace("```python\n\n```\n", "")  # an `echo: false` cell's empty code block
    body = re.sub(r"\]\(\.\./", "](", body)  # ../docs/ui.png (from nbs/) -> docs/ui.png (from the root)
    body = "\n".join(ln.rstrip() for ln in body.splitlines())
    body = re.sub(r"\n{3,}", "\n\n", body).strip() + "\n"
    return HEADER.format(nb=path.relative_to(root).as_posix()) + body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when README.md differs")
    p.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    a = p.parse_args(argv)
    text, readme = render(a.root), a.root / "README.md"
    if a.check:
        if readme.exists() and readme.read_text() == text:
            return 0
        print(
            f"README.md is not what {readme_notebook(a.root).name} gives: run `make readme` and commit", file=sys.stderr
        )
        return 1
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
