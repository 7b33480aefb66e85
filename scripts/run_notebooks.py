"""Run the notebooks in `nbs/` and save their outputs (tables, plots) in them, so that they read as documents.

    .venv/bin/python scripts/run_notebooks.py                 # every notebook
    .venv/bin/python scripts/run_notebooks.py 02_training     # the ones whose names contain 02_training

Cells run as `nbdev_test` runs them: those flagged with `settings.ini`'s `tst_flags` (slow, cuda) are skipped and
keep no output, and the first error stops that notebook, which is then left as it was. Outputs of `#| hide` cells
are dropped (tests and set-up, not part of the document), and so is what a cell writes to stderr (log lines,
warnings) or to stdout without a `print` of its own (fastai's per-epoch lines from a test's training). Run
`nbdev_clean` afterwards (`make notebooks` does both).
"""

import os
import re
import sys
import tempfile
import time
from pathlib import Path

from execnb.nbio import write_nb
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.config import get_config
from nbdev.process import NBProcessor


def _skip(cell, flags: set) -> bool:
    "True for cells that `nbdev_test` would not run."
    if cell.cell_type != "code":
        return True
    if "nbdev_export" + "(" in cell.source:
        return True
    d = cell.directives_ or {}
    return d.get("eval:", [""])[0].lower() == "false" or bool(flags & d.keys())


_TMP = re.compile(re.escape(tempfile.gettempdir()) + r"/tmp\w+")


def _scrub(text):
    "Temporary folders' random names as `<tmp>`, so that a rerun changes only what it measured."
    return _TMP.sub("<tmp>", text) if isinstance(text, str) else [_TMP.sub("<tmp>", t) for t in text]


def _shown(cell) -> list:
    "The outputs of `cell` that belong in the document."
    if "hide" in (cell.directives_ or {}):
        return []
    printed = "print(" in cell.source or "display(" in cell.source
    outs = [o for o in cell.outputs if o.output_type != "stream" or (o.name == "stdout" and printed)]
    for o in outs:
        if o.output_type == "stream":
            o.text = _scrub(o.text)
        for k in ("text/plain", "text/html", "text/markdown"):
            if k in o.get("data", {}):
                o.data[k] = _scrub(o.data[k])
    return outs


def run(path: Path, flags: set) -> bool:
    "Execute `path` and write it back with its outputs; on an error, print it and leave the file alone."
    nb = NBProcessor(path, rm_directives=False).nb
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    shell = CaptureShell(path)
    start = time.time()
    with working_directory(path.parent):
        try:
            shell.run_all(nb, exc_stop=True, preproc=lambda c: _skip(c, flags))
        except Exception:  # noqa: BLE001 - the notebook's own error, reported as nbdev_test reports it
            sys.stderr.write(shell.prettytb(fname=path) + "\n")
            return False
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs = [] if _skip(c, flags) else _shown(c)
    write_nb(nb, path)
    print(
        f"{path.name}: {time.time() - start:.0f} s, {sum(bool(c.get('outputs')) for c in nb.cells)} cells with output"
    )
    return True


def main(patterns: list[str]) -> int:
    cfg = get_config()
    flags = set(cfg.get("tst_flags", "").split())
    nbs = sorted(p for p in Path(cfg.config_path / cfg.nbs_path).glob("*.ipynb") if not p.name.startswith("_"))
    chosen = [p for p in nbs if not patterns or any(s in p.name for s in patterns)]
    if not chosen:
        sys.exit(f"no notebook in {cfg.nbs_path}/ matches {' '.join(patterns)}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    failed = [p.name for p in chosen if not run(p, flags)]
    if failed:
        print(f"failed, left unchanged: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
