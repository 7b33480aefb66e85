"""The catalogue-photo benchmark: accuracy per kind of shop photo (fp32 and int8), beside the raw 28x28 images.

    .venv/bin/python bench/catalogue_benchmark.py                      # 50 test images per class in every kind
    .venv/bin/python bench/catalogue_benchmark.py --per-class 5 --workers 2 --json /tmp/quick.json

Each of the `--per-class` first test images of every class is rendered as every kind of `fashioncat.catalogue`
(`shop_photo`, image i with seed i), read back through `fashioncat.photos.prepare` as the service reads an upload,
and categorised by both shipped models. `--prep main` reads the photos with the `prepare` of another commit's
`fashioncat/photos.py` (`git show REF:fashioncat/photos.py`), for a before/after on the same photos.
"""

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fashioncat.catalogue import SHOP_KINDS, bench_subset, catalogue_table, catalogue_views, table_md
from fashioncat.data import load_split
from fashioncat.serving import Engine


def prepare_at(ref: str):
    "The `prepare` of `fashioncat/photos.py` at git `ref` ('' or 'here': this tree's)."
    if ref in ("", "here"):
        from fashioncat.photos import prepare

        return prepare
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:fashioncat/photos.py"], capture_output=True, text=True, check=True
    ).stdout
    d = Path(tempfile.mkdtemp()) / f"photos_{ref.replace('/', '_')}.py"
    d.write_text(src)
    spec = importlib.util.spec_from_file_location(d.stem, d)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[d.stem] = mod  # the worker processes find it by name
    spec.loader.exec_module(mod)
    return mod.prepare


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--workers", type=int, default=1, help="processes rendering photos at once")
    p.add_argument(
        "--prep", default="here", help="git ref whose fashioncat/photos.py reads the photos ('here': this tree)"
    )
    p.add_argument("--fp32", default=str(ROOT / "models/fashioncat.onnx"))
    p.add_argument("--int8", default=str(ROOT / "models/fashioncat-int8.onnx"))
    p.add_argument("--kinds", nargs="*", default=list(SHOP_KINDS))
    p.add_argument("--json", default=str(ROOT / "bench/results/catalogue_benchmark.json"))
    args = p.parse_args(argv)
    x, y = load_split("test")
    idx = bench_subset(y, args.per_class)
    x, y = x[idx], y[idx]
    engines = {"fp32": Engine(args.fp32), "int8": Engine(args.int8)}
    t0 = time.perf_counter()
    views = catalogue_views(x, args.kinds, prep=prepare_at(args.prep), workers=args.workers)
    secs = time.perf_counter() - t0
    t = catalogue_table({m: e.predict for m, e in engines.items()}, x, y, views)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    t.update(
        per_class=args.per_class,
        prep=args.prep,
        commit=commit,
        seconds=round(secs, 1),
        models={
            m: {
                "path": str(Path(e.info.path).relative_to(ROOT))
                if Path(e.info.path).is_relative_to(ROOT)
                else e.info.path,
                "sha256": e.info.sha256[:12],
            }
            for m, e in engines.items()
        },
    )
    print(
        f"{len(y)} test images per kind ({args.per_class} per class), photos read by prepare at {args.prep!r} "
        f"(commit {commit}); rendering + prepare took {secs:.0f} s with {args.workers} worker(s)\n"
    )
    print(table_md(t))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(t, indent=1) + "\n")
        print(f"\nwritten: {args.json}")
    return t


if __name__ == "__main__":
    main()
