"""The API's load-test figures, a BEFORE revision against this working tree (AFTER), in one run, side by side.

For each input (28x28 PNGs, ~800-pixel catalogue JPEGs) and round, a fresh server of each tree runs `load_test.py`'s
phases: a warm-up and the fixed open-loop rate with both servers loaded at once (each sent the full rate), so that the
noise of a shared machine falls on both in the same seconds, then the ramp to the highest rate with p95 <= 300 ms and
errors <= 1%, one server at a time, their order alternating between rounds. BEFORE is a
`git worktree` of `--rev` (removed at the end), served by the same interpreter with its own `app`, `fashioncat` and
shipped model (the server's cwd and PYTHONPATH are its tree's). The report gives, per input and figure, each tree's
median over the rounds and the ratio after/before; a figure regresses when it is worse by more than `--tolerance`
(latency, server CPU or peak memory up, the maximum sustained rate down). Only 127.0.0.1 is ever contacted.

    python bench/load_compare.py                    # the full run (~20-25 min on 2 cores)
    python bench/load_compare.py --quick --out /tmp/load_compare.json   # a ~2-minute smoke run of the same code
    python bench/load_compare.py --rev HEAD~1 --inputs png --rounds 3
"""

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load_test as lt

ROOT = lt.ROOT
MODEL = "models/fashioncat-int8.onnx"  # each tree's own shipped model
INPUTS = ("png", "jpeg")
TREES = ("before", "after")
# the judged figures, and whether more is better (the maximum sustained rate) or worse (all the others)
FIGURES = {"mean_ms": False, "p95_ms": False, "p99_ms": False, "cpu_share": False, "rss_peak_mb": False}
FIGURES["max_rps"] = True
LABELS = {"mean_ms": "mean ms", "p95_ms": "p95 ms", "p99_ms": "p99 ms", "cpu_share": "server CPU (of all cores)"}
LABELS |= {"rss_peak_mb": "peak RSS MB", "max_rps": "max sustained rate/s"}


@dataclass
class TreeServer(lt.Server):
    "load_test's server, started from another tree (`Server.start` runs uvicorn with cwd=load_test.ROOT)."

    root: Path = ROOT

    def start(self, python: str, workers: int, env: dict, log: Path) -> "TreeServer":
        saved, lt.ROOT = lt.ROOT, self.root
        try:
            return super().start(python, workers, env, log)
        finally:
            lt.ROOT = saved


# --- the two trees ------------------------------------------------------------------------------------------------


def git(*args: str) -> str:
    r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if r.returncode:
        sys.exit(f"load_compare: git {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout.strip()


def add_worktree(rev: str, dest: Path) -> Path:
    "A detached worktree of `rev` at `dest`, with its shipped model checked."
    git("worktree", "add", "--detach", str(dest), rev)
    model = dest / MODEL
    if not model.is_file() or model.read_bytes()[:40].startswith(b"version https://git-lfs"):
        sys.exit(f"load_compare: {rev} has no shipped model {MODEL} (missing, or a Git LFS pointer)")
    return dest


def remove_worktree(dest: Path):
    cmd = ["git", "worktree", "remove", "--force", str(dest)]
    if subprocess.run(cmd, cwd=ROOT, capture_output=True, check=False).returncode:
        shutil.rmtree(dest, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True, check=False)


def server_env(tree: Path, threads: int) -> dict:
    "The server's environment: this tree's code and model; no FASHIONCAT_* setting inherited from the caller."
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASHIONCAT_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {"GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": str(threads), "FASHIONCAT_THREADS": str(threads)}
    return env | {"PYTHONPATH": str(tree), "FASHIONCAT_MODEL_PATH": str(tree / MODEL)}


def check_imports(python: str, tree: Path, env: dict):
    "Fail unless a server started in `tree` would import that tree's `app` and `fashioncat`."
    code = "import importlib.util as u; print(u.find_spec('app').origin); print(u.find_spec('fashioncat').origin)"
    r = subprocess.run([python, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=False)
    found = r.stdout.split()
    if r.returncode or len(found) != 2 or not all(Path(f).resolve().is_relative_to(tree.resolve()) for f in found):
        sys.exit(f"load_compare: a server in {tree} would import {found or r.stderr.strip()}, not that tree's code")


# --- the runs -----------------------------------------------------------------------------------------------------


def make_inputs(names: list[str], n_images: int) -> dict:
    "load_test's bodies: 28x28 PNGs of `n_images` test images, catalogue JPEGs of a quarter of them."
    x, _ = lt.test_images(n_images)
    out = {}
    if "png" in names:
        out["png"] = ([lt.png_28(a) for a in x], "item.png", "image/png")
    if "jpeg" in names:
        out["jpeg"] = ([lt.catalogue_jpeg(a) for a in x[: max(1, n_images // 4)]], "item.jpg", "image/jpeg")
    return out


def _record(tree: str, inp: str, rnd: int, srv: TreeServer, p, best: float, steps: list) -> dict:
    "One tree's figures in one round."
    figures = {k: getattr(p, k) for k in FIGURES if k != "max_rps"} | {"max_rps": best}
    ramp = [{"rate": s.rate, "p95_ms": s.p95_ms, "error_rate": s.error_rate, "passed": s.passed} for s in steps]
    return {"input": inp, "round": rnd, "tree": tree, **figures, "errors": p.errors, "sent": p.sent} | {
        "cold_start_s": srv.cold_start_s,
        "ui_ready_s": srv.ui_ready_s,
        "rss_idle_mb": srv.rss_idle_mb,
        "ramp": ramp,
    }


async def run_pair(roots: dict, inp: str, body: tuple, rnd: int, args, log_dir: Path) -> list[dict]:
    """Fresh servers of both trees at once. The warm-up and the fixed rate run side by side, each server sent the rate
    on its own connections, so that the machine's noise (other tenants, frequency, the load generator) falls on both
    alike within the same seconds; then each one's ramp alone while the other idles, BEFORE first in odd rounds and
    AFTER first in even ones. Each tree's figures."""
    srvs = {t: TreeServer(t, "app.main:app", "/predict", root=roots[t]) for t in TREES}
    try:
        for t, srv in srvs.items():
            log = log_dir / f"{inp}-round{rnd}-{t}" / "server.log"  # the UI's data folder goes beside it
            log.parent.mkdir(parents=True)
            srv.start(args.python, 1, server_env(roots[t], args.threads), log)
        bodies, fname, ctype = body
        reqs = {t: [lt.multipart_request(s.path, s.port, b, fname, ctype) for b in bodies] for t, s in srvs.items()}

        async def side_by_side(rate: float, duration: float) -> dict:
            phases = (lt.run_phase(srvs[t], inp, reqs[t], rate, duration, args.timeout) for t in TREES)
            return dict(zip(TREES, await asyncio.gather(*phases)))

        await side_by_side(min(50, args.rate), args.warmup_s)
        fixed = await side_by_side(args.rate, args.duration)
        for t, p in fixed.items():
            print(
                f"  fixed {t:6s} {inp:4s} round {rnd}: {p.rate:.0f}/s x {p.duration_s:.0f} s: mean {p.mean_ms:.1f} "
                f"p95 {p.p95_ms:.1f} p99 {p.p99_ms:.1f} ms, errors {p.errors}/{p.sent}, CPU {p.cpu_share:.1%}, "
                f"peak RSS {p.rss_peak_mb:.0f} MB (ready in {srvs[t].cold_start_s:.2f} s)",
                flush=True,
            )
        ramps = {}
        for t in TREES if rnd % 2 else TREES[::-1]:
            await asyncio.sleep(args.cooldown_s)
            ramps[t] = await lt.ramp(srvs[t], inp, reqs[t], args)
    finally:
        for srv in srvs.values():
            srv.stop()
    return [_record(t, inp, rnd, srvs[t], fixed[t], *ramps[t]) for t in TREES]


async def run_all(args, roots: dict, log_dir: Path) -> list[dict]:
    "Every input, every round (both trees side by side): the raw figures in the order they were taken."
    inputs = make_inputs(args.inputs, args.n_images)
    raw = []
    for inp in args.inputs:
        for rnd in range(1, args.rounds + 1):
            raw += await run_pair(roots, inp, inputs[inp], rnd, args, log_dir)
    return raw


# --- the report ---------------------------------------------------------------------------------------------------


def summarise(raw: list[dict], tolerance: float) -> dict:
    "Per input and figure: each tree's median over the rounds, the ratio after/before, and the figures that regressed."
    medians, ratios, regressed = {}, {}, []
    for inp in dict.fromkeys(r["input"] for r in raw):
        medians[inp], ratios[inp] = {}, {}
        for fig, more_is_better in FIGURES.items():
            m = {t: statistics.median(r[fig] for r in raw if r["input"] == inp and r["tree"] == t) for t in TREES}
            ratio = m["after"] / m["before"] if m["before"] else (math.inf if m["after"] else math.nan)
            medians[inp][fig], ratios[inp][fig] = m, ratio
            if (ratio < 1 - tolerance) if more_is_better else (ratio > 1 + tolerance):
                regressed.append(f"{inp} {fig}")
    return {"medians": medians, "ratios": ratios, "regressed": regressed}


def fmt(fig: str, v: float) -> str:
    if v is None or math.isnan(v):
        return "n/a"
    return f"{v:.1%}" if fig == "cpu_share" else f"{v:.0f}" if fig in ("rss_peak_mb", "max_rps") else f"{v:.1f}"


def markdown(res: dict) -> str:
    s, b, a = res["settings"], res["before"], res["after"]
    lines = [
        f"Load test `{res['command']}`, {res['date']}, {res['machine']}; load generator on the same machine.",
        "",
        (
            f"BEFORE `{b['commit']}` (`{b['rev']}`), AFTER `{a['commit']}`{' with uncommitted changes' if a['dirty'] else ''}"
            f"; each tree's own `{MODEL}`, 1 uvicorn worker, UI mounted. Median of {res['rounds']} round(s) each, "
            f"side by side at the fixed rate {s['rate']:.0f}/s for {s['duration_s']:.0f} s; a figure regresses when it is "
            f"worse by more than {s['tolerance']:.0%}."
        ),
        "",
        "| input | figure | before | after | after / before | |",
        "|---|---|---|---|---|---|",
    ]
    for inp, figs in res["medians"].items():
        for fig, m in figs.items():
            r = res["ratios"][inp][fig]
            verdict = "REGRESSED" if f"{inp} {fig}" in res["regressed"] else "ok"
            ratio = "n/a" if r is None or math.isnan(r) else f"{r:.2f}"
            lines.append(
                f"| {inp} | {LABELS[fig]} | {fmt(fig, m['before'])} | {fmt(fig, m['after'])} | {ratio} | {verdict} |"
            )
    errors = {t: sum(r["errors"] for r in res["raw"] if r["tree"] == t) for t in TREES}
    sent = {t: sum(r["sent"] for r in res["raw"] if r["tree"] == t) for t in TREES}
    lines += [
        "",
        (
            f"Errors at the fixed rate: before {errors['before']} / {sent['before']}, after {errors['after']} / "
            f"{sent['after']}. Load average at the start {res['load_avg_start']}, at the end {res['load_avg_end']}."
        ),
        "",
        f"Regressed: {', '.join(res['regressed']) or 'none'}.",
    ]
    return "\n".join(lines)


def finite(o):
    "NaN and infinity as null: strict JSON."
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [finite(v) for v in o]
    return o


# --- command line -------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    d = lt.parse_args([])  # load_test's defaults for the phases it runs
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--rev",
        default="547d33d",
        help="BEFORE: a git revision (default: main just before shop photos and OOD were merged)",
    )
    ap.add_argument("--rounds", type=int, default=2, help="BEFORE, AFTER pairs per input")
    ap.add_argument("--tolerance", type=float, default=0.10, help="worse by more than this fraction: regressed")
    ap.add_argument("--rate", type=float, default=d.rate, help="fixed-phase rate, requests/s")
    ap.add_argument("--duration", type=float, default=d.duration, help="fixed-phase duration, s")
    ap.add_argument("--inputs", default=",".join(INPUTS), help="comma-separated: png (28x28), jpeg (800-pixel)")
    ap.add_argument("--ramp-start", type=float, default=d.ramp_start)
    ap.add_argument("--ramp-factor", type=float, default=d.ramp_factor)
    ap.add_argument("--ramp-step-s", type=float, default=d.ramp_step_s, help="seconds per ramp step")
    ap.add_argument("--ramp-max-steps", type=int, default=d.ramp_max_steps)
    ap.add_argument(
        "--bisect",
        type=int,
        default=4,
        help="bisection steps after the ramp breaks (load_test's 2 leave steps of ~10%% of the rate: too coarse to judge 10%%)",
    )
    ap.add_argument("--max-rate", type=float, default=d.max_rate)
    ap.add_argument("--warmup-s", type=float, default=d.warmup_s)
    ap.add_argument("--cooldown-s", type=float, default=d.cooldown_s)
    ap.add_argument("--timeout", type=float, default=d.timeout, help="a request slower than this counts as an error")
    ap.add_argument("--n-images", type=int, default=d.n_images, help="distinct test images cycled through")
    ap.add_argument("--threads", type=int, default=d.threads, help="FASHIONCAT_THREADS of both servers")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs both servers")
    ap.add_argument("--quick", action="store_true", help="a smoke run: load_test's --quick phases, 1 round")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "load_compare.json"))
    args = ap.parse_args(argv)
    if args.quick:
        q = lt.parse_args(["--quick"])
        for k in ("duration", "ramp_step_s", "ramp_max_steps", "bisect", "warmup_s", "cooldown_s", "n_images"):
            setattr(args, k, getattr(q, k))
        args.rounds = 1
    args.inputs = [s.strip() for s in args.inputs.split(",") if s.strip()]
    if not args.inputs or set(args.inputs) - set(INPUTS):
        ap.error(f"--inputs: one or more of {', '.join(INPUTS)}, not {','.join(args.inputs) or 'nothing'}")
    if args.rounds < 1:
        ap.error("--rounds: at least 1")
    if not 0 <= args.tolerance < 1:
        ap.error("--tolerance: a fraction in [0, 1)")
    return args


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill stops the servers and removes the worktree too
    before_commit = git("rev-parse", "--short", f"{args.rev}^{{commit}}")
    head, dirty = git("rev-parse", "--short", "HEAD"), bool(git("status", "--porcelain"))
    tmp = Path(tempfile.mkdtemp(prefix="fashioncat-compare-"))
    before, ok = tmp / "before", False
    try:
        roots = {"before": add_worktree(args.rev, before), "after": ROOT}
        for root in roots.values():
            check_imports(args.python, root, server_env(root, args.threads))
        print(f"BEFORE {before_commit} ({args.rev}) in {before}; AFTER {head}{' (dirty)' if dirty else ''} in {ROOT}")
        load_start, t0 = os.getloadavg(), time.perf_counter()
        raw = asyncio.run(run_all(args, roots, tmp / "logs"))
        ok = True
    finally:
        if before.exists():
            remove_worktree(before)
        if ok or not (tmp / "logs").exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"load_compare: stopped; the server logs are kept in {tmp / 'logs'}", file=sys.stderr)
    settings = {k: getattr(args, k) for k in ("rate", "inputs", "ramp_start", "ramp_factor", "ramp_step_s")}
    settings |= {k: getattr(args, k) for k in ("ramp_max_steps", "bisect", "max_rate", "warmup_s", "cooldown_s")}
    settings |= {"duration_s": args.duration, "timeout_s": args.timeout, "n_images": args.n_images}
    settings |= {"threads": args.threads, "tolerance": args.tolerance, "quick": args.quick, "workers": 1, "ui": True}
    settings |= {"sla": {"p95_ms": lt.SLA_P95_S * 1000, "errors": lt.SLA_ERRORS}}
    res = {
        "command": "python bench/load_compare.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{lt.NCPU} CPU cores ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}",
        "load_avg_start": [round(v, 2) for v in load_start],
        "load_avg_end": [round(v, 2) for v in os.getloadavg()],
        "wall_s": round(time.perf_counter() - t0, 1),
        "before": {"rev": args.rev, "commit": before_commit, "model": MODEL},
        "after": {"commit": head, "dirty": dirty, "model": MODEL},
        "settings": settings,
        "rounds": args.rounds,
        "raw": raw,
        **summarise(raw, args.tolerance),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(finite(res), indent=2, allow_nan=False) + "\n")
    print("\n" + markdown(res) + f"\n\n(written to {out}; {res['wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
