"""Quick throughput and latency of `POST /predict` (and `/predict/batch`) on loopback; prints its figures.

    .venv/bin/python bench/predict_throughput.py                        # starts its own server on a free port
    .venv/bin/python bench/predict_throughput.py --url http://127.0.0.1:8000 --n 500 --concurrency 4

Bounded: at most `--n` requests and `--seconds` seconds per phase; only 127.0.0.1 / localhost is accepted. The
inputs are the UI's example photos (catalogue-style PNGs made from real test images, `app/examples/`). The full
load study (open-loop rates, ramp, CPU and memory) is `bench/load_test.py`.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "app" / "examples").glob("*.png"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(python: str, threads: int) -> tuple[subprocess.Popen, str, float, float]:
    """uvicorn app.main:app on a free loopback port; returns the process, its URL, the cold start to /ready and to the
    UI ready (`/ready` says `"ui": "ready"`; NaN when the UI is disabled or failed), in seconds."""
    port = _free_port()
    env = {
        "FASHIONCAT_DATA_DIR": tempfile.mkdtemp(prefix="fashioncat-throughput-"),  # the UI's, throwaway
        "FASHIONCAT_UI_AUTH": "off",  # the server binds 127.0.0.1
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "FASHIONCAT_THREADS": str(threads),
        "FASHIONCAT_LOG_LEVEL": "WARNING",
    }
    cmd = [
        python,
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    ready = None
    while time.perf_counter() - t0 < 120:
        if proc.poll() is not None:
            sys.exit("server exited:\n" + proc.stderr.read().decode()[-3000:])
        try:
            r = httpx.get(url + "/ready", timeout=1)
            if r.status_code == 200:
                ready = ready or time.perf_counter() - t0
                ui = r.json().get("ui", "disabled")
                if ui != "loading":  # the UI comes up after /ready, in the background; measure with it up
                    return proc, url, ready, time.perf_counter() - t0 if ui == "ready" else float("nan")
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    sys.exit("server not ready in 120 s")


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run_phase(url: str, bodies: list[bytes], n: int, seconds: float, concurrency: int, headers: dict) -> dict:
    "Send up to `n` single-image requests with `concurrency` clients, for at most `seconds`."
    deadline = time.perf_counter() + seconds
    lat, errors = [], 0

    def worker(k: int):
        nonlocal errors
        with httpx.Client(base_url=url, timeout=10, headers=headers) as c:
            for i in range(k, n, concurrency):
                if time.perf_counter() > deadline:
                    return
                body = bodies[i % len(bodies)]
                t = time.perf_counter()
                r = c.post("/predict", files={"file": ("photo.png", body, "image/png")})
                lat.append(time.perf_counter() - t)
                errors += r.status_code != 200

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(worker, range(concurrency)))
    wall = time.perf_counter() - t0
    return {"requests": len(lat), "errors": errors, "wall_s": wall, "rps": len(lat) / wall, "lat": lat}


def run_batch(url: str, bodies: list[bytes], size: int, repeats: int, headers: dict) -> dict:
    "Time `repeats` batch requests of `size` images each."
    files = [("files", (f"{i}.png", bodies[i % len(bodies)], "image/png")) for i in range(size)]
    lat = []
    with httpx.Client(base_url=url, timeout=60, headers=headers) as c:
        for _ in range(repeats):
            t = time.perf_counter()
            r = c.post("/predict/batch", files=files)
            r.raise_for_status()
            lat.append(time.perf_counter() - t)
    return {"size": size, "lat": lat, "images_per_s": size * len(lat) / sum(lat)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", help="a running server on loopback (default: start one)")
    p.add_argument("--n", type=int, default=300, help="requests per phase (at most)")
    p.add_argument("--seconds", type=float, default=15, help="time limit per phase")
    p.add_argument("--concurrency", type=int, default=4, help="clients in the concurrent phase")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="FASHIONCAT_THREADS of the started server")
    p.add_argument("--python", default=sys.executable, help="interpreter for the started server")
    p.add_argument("--api-key", help="X-API-Key, when the server requires one")
    a = p.parse_args()
    if a.url and urlparse(a.url).hostname not in ("127.0.0.1", "localhost"):
        sys.exit("only loopback servers (127.0.0.1, localhost) are benchmarked")
    bodies = [f.read_bytes() for f in EXAMPLES]
    headers = {"X-API-Key": a.api_key} if a.api_key else {}
    proc = None
    if a.url:
        url = a.url.rstrip("/")
    else:
        proc, url, cold, cold_ui = start_server(a.python, a.threads)
        print(
            f"server: {url} (started here, FASHIONCAT_THREADS={a.threads}); cold start to /ready: {cold:.2f} s, "
            f"to UI ready: {cold_ui:.2f} s"
        )
    try:
        model = httpx.get(url + "/model", timeout=10).json()
        print(f"model: {model.get('file')} version {model.get('version')} ({model.get('architecture')})")
        sizes = sorted(len(b) for b in bodies)
        print(f"inputs: {len(bodies)} example photos, {sizes[0] // 1024}-{sizes[-1] // 1024} KB PNG")
        run_phase(url, bodies, 20, 10, 1, headers)  # warm-up
        for conc in (1, a.concurrency):
            r = run_phase(url, bodies, a.n, a.seconds, conc, headers)
            ms = [x * 1000 for x in r["lat"]]
            print(
                f"/predict x{r['requests']}, concurrency {conc}: {r['rps']:.1f} req/s; latency ms "
                f"mean {statistics.mean(ms):.1f} p50 {_pct(ms, 0.5):.1f} p95 {_pct(ms, 0.95):.1f} "
                f"p99 {_pct(ms, 0.99):.1f} max {max(ms):.1f}; errors {r['errors']}"
            )
        b = run_batch(url, bodies, a.batch_size, 5, headers)
        print(
            f"/predict/batch of {b['size']} x{len(b['lat'])}: {b['images_per_s']:.1f} images/s; "
            f"{statistics.mean(b['lat']) * 1000:.0f} ms per batch"
        )
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=15)


if __name__ == "__main__":
    main()
