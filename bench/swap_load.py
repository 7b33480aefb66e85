"""Hot swaps under load: latency at a steady rate with and without swaps of the served version, in one run against
one server on 127.0.0.1.

Builds a models folder (two versions, `v1` and `v2`, copies of the shipped int8 model unless `--model`/`--model2`
say otherwise), starts `uvicorn app.main:app` on it with an admin key (the load test's `Server`), and sends one
open-loop stream of 28x28 PNGs at `--rate` requests/s. The stream is cut into blocks of `--block-s` seconds that
alternate: steady, swapping, steady, swapping, ... In a swapping block, `POST /admin/models/{version}/activate`
alternates v2 / v1 every `--swap-every` s (each swap loads, checks and warms the version, then swaps it in). Steady
and swapping blocks interleave so that both see the same background load on a shared machine.

It reports, for the steady blocks and for the swapping ones, the requests, failures (any status but 200, or slower
than `--timeout`) and p50/p95/p99, and the same for the requests sent while a swap was loading (a slow swap may spill
into the next steady block); the checks are zero failed requests and p95 while swapping within 2x of steady p95. Latency counts from each request's scheduled send time
(open loop, no coordinated omission), as in `load_test.py`.

    python bench/swap_load.py                  # 100/s, 30 s steady + 30 s swapping, 1 swap/s in the swapping blocks
    python bench/swap_load.py --quick          # 10 s + 10 s
"""

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import HOST, NCPU, ROOT, Pool, Server, multipart_request, png_28, test_images

ADMIN_KEY = "swap-bench"


def versions_folder(models: list[str]) -> Path:
    "A temporary models folder: versions v1, v2, ... holding the given model files, `current` -> v1."
    root = Path(tempfile.mkdtemp(prefix="fashioncat-models-"))
    for i, m in enumerate(models, 1):
        (root / "versions" / f"v{i}").mkdir(parents=True)
        shutil.copy(ROOT / m if not Path(m).is_absolute() else m, root / "versions" / f"v{i}" / "fashioncat-int8.onnx")
    (root / "current").write_text("v1\n")
    return root


def activate(port: int, version: str) -> dict:
    "POST /admin/models/{version}/activate; the answer, with the client's wall time and the status."
    req = urllib.request.Request(
        f"http://{HOST}:{port}/admin/models/{version}/activate",
        data=b"",
        method="POST",
        headers={"X-Admin-Key": ADMIN_KEY},
    )
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            out, status = json.loads(r.read()), r.status
    except urllib.error.HTTPError as e:
        out, status = {"detail": e.read().decode(errors="replace")}, e.code
    return {**out, "status": status, "wall_s": time.perf_counter() - t0}


async def phase(
    port: int, bodies: list[bytes], rate: float, duration: float, timeout: float, t0: float | None = None
) -> list[tuple]:
    "Open-loop requests from `t0` (the event loop's clock; default: now): (scheduled time, latency s, status) each."
    loop, pool, out = asyncio.get_running_loop(), Pool(port), []

    async def one(t_sched: float, data: bytes):
        conn = None
        try:
            conn = await asyncio.wait_for(pool.get(), timeout)
            status = await asyncio.wait_for(conn.request(data), max(0.001, t_sched + timeout - loop.time()))
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
            status = type(e).__name__
            if conn:
                conn.close()
        if conn:
            pool.put(conn)
        out.append((t_sched, loop.time() - t_sched, status))

    n, t0, tasks = int(rate * duration), loop.time() + 0.05 if t0 is None else t0, []
    for i in range(n):
        await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
        tasks.append(asyncio.create_task(one(t0 + i / rate, bodies[i % len(bodies)])))
    await asyncio.gather(*tasks)
    pool.close()
    return out


def summary(rows: list[tuple]) -> dict:
    lat = np.array([r[1] for r in rows]) * 1000
    fails = [r for r in rows if r[2] != 200]
    p50, p95, p99 = np.percentile(lat, [50, 95, 99]) if len(lat) else (np.nan,) * 3
    statuses = {}
    for r in rows:
        statuses[str(r[2])] = statuses.get(str(r[2]), 0) + 1
    return {
        "requests": len(rows),
        "failed": len(fails),
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "max_ms": float(lat.max()) if len(lat) else float("nan"),
        "statuses": statuses,
    }


async def swaps(port: int, t0: float, blocks: int, block_s: float, every: float, log: list, loop_t: list) -> None:
    """In every other block of `block_s` seconds from `t0` (the 2nd, 4th, ...), alternate v2 / v1 every `every` s;
    log each swap, with its start and end on the event loop's clock."""
    loop, i = asyncio.get_running_loop(), 0
    for b in range(1, blocks, 2):
        t = t0 + b * block_s
        while t < t0 + (b + 1) * block_s - 0.25:
            await asyncio.sleep(max(0.0, t - loop.time()))
            version = ("v2", "v1")[i % 2]
            start = loop.time()
            r = await asyncio.to_thread(activate, port, version)
            log.append({**r, "asked": version})
            loop_t.append((start, loop.time()))
            i += 1
            t += every


async def main_async(args) -> dict:
    x, _ = test_images(args.n_images)
    load_before = os.getloadavg()[0]
    root = versions_folder([args.model, args.model2])
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1", FASHIONCAT_THREADS="1")
    env |= {"FASHIONCAT_MODELS_DIR": str(root), "FASHIONCAT_ADMIN_KEYS": ADMIN_KEY}
    if args.no_ui:
        env["FASHIONCAT_UI_ENABLED"] = "false"
    srv = Server("fashioncat", "app.main:app", "/predict")
    log_dir = Path(tempfile.mkdtemp(prefix="fashioncat-swap-"))
    srv.start(args.python, 1, env, log_dir / "server.log")
    print(f"server ready in {srv.cold_start_s:.2f} s (port {srv.port}); versions in {root}", flush=True)
    try:
        reqs = [multipart_request("/predict", srv.port, png_28(a), "item.png", "image/png") for a in x]
        await phase(srv.port, reqs, min(50, args.rate), args.warmup_s, args.timeout)
        warm_swap = await asyncio.to_thread(activate, srv.port, "v2")  # the first swap pays imports; not measured
        await asyncio.to_thread(activate, srv.port, "v1")
        # steady and swapping blocks alternate in one open-loop stream, so both see the same background load
        blocks = 2 * max(1, round(args.duration / args.block_s))
        t0, swap_log, windows = asyncio.get_running_loop().time() + 0.1, [], []
        rows, _ = await asyncio.gather(
            phase(srv.port, reqs, args.rate, blocks * args.block_s, args.timeout, t0),
            swaps(srv.port, t0, blocks, args.block_s, args.swap_every, swap_log, windows),
        )
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)
    block = [int((r[0] - t0) // args.block_s) for r in rows]
    into = [(r[0] - t0) % args.block_s for r in rows]
    # a steady block starts after `settle_s`, so the backlog of the swapping block before it is not counted as steady
    steady = [r for r, b, t in zip(rows, block, into) if b % 2 == 0 and (b == 0 or t >= args.settle_s)]
    during = [r for r, b in zip(rows, block) if b % 2 == 1]
    in_window = [r for r in rows if any(a <= r[0] <= b for a, b in windows)]
    pairs = []  # each swapping block beside the steady block before it: noise on a shared machine hits one pair
    for k in range(1, blocks, 2):
        p = [summary([r for r, b, t in zip(rows, block, into) if b == k - 1 and (b == 0 or t >= args.settle_s)])]
        p.append(summary([r for r, b in zip(rows, block) if b == k]))
        pairs.append([round(p[0]["p95_ms"], 1), round(p[1]["p95_ms"], 1)])
    res = {
        "steady": summary(steady),
        "swapping": summary(during),
        "while_loading": summary(in_window),
        "block_pairs_p95_ms": pairs,  # [steady block, the swapping block after it]
        "swaps": [
            {k: s.get(k) for k in ("asked", "status", "version", "previous", "load_s", "wall_s")} for s in swap_log
        ],
        "first_swap_load_s": warm_swap.get("load_s"),
        "loadavg_1m": [load_before, os.getloadavg()[0]],  # other work on the machine, at the start and the end
        "rate": args.rate,
        "duration_s": args.duration,
        "block_s": args.block_s,
        "swap_every_s": args.swap_every,
        "models": [args.model, args.model2],
        "ui": not args.no_ui,
    }
    st, sw = res["steady"], res["swapping"]
    res["p95_ratio"] = sw["p95_ms"] / st["p95_ms"]
    ok_swaps = sum(s["status"] == 200 for s in swap_log)
    res["pairs_within_2x"] = sum(b <= 2 * a for a, b in pairs)
    res["checks"] = [
        {"what": "failed requests in swapping blocks", "value": sw["failed"], "target": "0", "ok": sw["failed"] == 0},
        {
            "what": "swaps that succeeded",
            "value": f"{ok_swaps}/{len(swap_log)}",
            "target": "all",
            "ok": ok_swaps == len(swap_log) > 0,
        },
        {
            "what": "p95 swapping / p95 steady",
            "value": f"{res['p95_ratio']:.2f}",
            "target": "<= 2",
            "ok": res["p95_ratio"] <= 2,
        },
        {
            "what": "block pairs whose swapping p95 is within 2x of the steady p95 before it",
            "value": f"{res['pairs_within_2x']}/{len(pairs)}",
            "target": "all",
            "ok": res["pairs_within_2x"] == len(pairs),
        },
    ]
    return res


def markdown(res: dict) -> str:
    lines = [
        f"Swap load test `{res['command']}`, {res['date']}, {res['machine']}; load generator on the same machine.",
        "",
        (
            f"{res['rate']:.0f} requests/s of 28x28 PNGs in {res['block_s']:g}-second blocks, steady and swapping in turn "
            f"({res['duration_s']:g} s of each); in a swapping block the served version alternates v2 / v1 every "
            f"{res['swap_every_s']:g} s ({len(res['swaps'])} swaps, load and warm-up "
            f"{np.median([s['load_s'] or np.nan for s in res['swaps']]):.2f} s median). UI {'mounted' if res['ui'] else 'off'}; "
            f"1-minute load average {res['loadavg_1m'][0]:.1f} at the start, {res['loadavg_1m'][1]:.1f} at the end."
        ),
        "",
        "| phase | requests | failed | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, key in (
        ("steady blocks", "steady"),
        ("swapping blocks", "swapping"),
        ("sent while a swap was loading", "while_loading"),
    ):
        p = res[key]
        lines.append(
            f"| {name} | {p['requests']} | {p['failed']} | {p['p50_ms']:.1f} | {p['p95_ms']:.1f} | {p['p99_ms']:.1f} "
            f"| {p['max_ms']:.1f} |"
        )
    lines += [
        "",
        *(f"- {'PASS' if c['ok'] else 'FAIL'} {c['what']}: {c['value']} (target {c['target']})" for c in res["checks"]),
    ]
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=100, help="requests/s in both phases")
    ap.add_argument("--duration", type=float, default=30, help="seconds of steady blocks, and as many of swapping ones")
    ap.add_argument("--block-s", type=float, default=5.0, help="length of each steady or swapping block")
    ap.add_argument("--swap-every", type=float, default=1.0, help="seconds between swaps within a swapping block")
    ap.add_argument("--settle-s", type=float, default=0.5, help="start of a steady block not counted as steady")
    ap.add_argument("--model", default="models/fashioncat-int8.onnx", help="v1's model file")
    ap.add_argument("--model2", default="models/fashioncat-int8.onnx", help="v2's model file")
    ap.add_argument("--timeout", type=float, default=5, help="a request slower than this counts as failed")
    ap.add_argument("--warmup-s", type=float, default=3)
    ap.add_argument("--n-images", type=int, default=200)
    ap.add_argument("--no-ui", action="store_true", help="API only (FASHIONCAT_UI_ENABLED=false)")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs the server")
    ap.add_argument("--quick", action="store_true", help="10 s phases")
    ap.add_argument(
        "--out", default=str(ROOT / "bench" / "results" / "swap_load.json"), help="JSON; .md written beside"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.warmup_s = 10, 2
    return args


def main(argv=None):
    args = parse_args(argv)
    res = asyncio.run(main_async(args))
    res["command"] = "python bench/swap_load.py " + " ".join(sys.argv[1:] if argv is None else argv)
    res["date"] = time.strftime("%Y-%m-%d")
    res["machine"] = (
        f"{NCPU} CPU cores ({platform.processor() or platform.machine()}), Python {platform.python_version()}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    md = markdown(res)
    out.with_suffix(".md").write_text(md + "\n")
    print("\n" + md + f"\n\n(written to {out} and {out.with_suffix('.md')})")


if __name__ == "__main__":
    main()
