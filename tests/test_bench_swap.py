"""bench/swap_load.py runs end to end on a short schedule: swaps happen, every request is accounted for, and the
report has the figures the docs quote. Its timings are not checked (the CPU may be shared)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_swap_load_runs_and_reports(tmp_path):
    out = tmp_path / "swap.json"
    cmd = [sys.executable, "bench/swap_load.py", "--rate", "40", "--duration", "2", "--block-s", "1"]
    cmd += ["--swap-every", "0.4", "--warmup-s", "0.5", "--n-images", "20", "--no-ui", "--out", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["steady"]["requests"] > 0 and res["swapping"]["requests"] == 80  # two 1-second blocks at 40/s
    assert len(res["swaps"]) >= 4 and {s["status"] for s in res["swaps"]} == {200}
    assert {s["version"] for s in res["swaps"]} == {"v1", "v2"}
    assert res["checks"][0]["what"] == "failed requests in swapping blocks" and res["checks"][0]["ok"]
    assert "| swapping blocks | 80 |" in out.with_suffix(".md").read_text()
