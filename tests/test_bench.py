"""bench/bench_inference.py runs end to end: on a training config's shape (--untrained) and on a trained folder whose
ONNX files it must export itself. Timings are not checked (the CPU may be shared); the rows, sizes and shapes are."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
torch = pytest.importorskip("torch")  # the dev install has it: the bench exports from PyTorch
FAST = ["--threads", "1", "--n", "20", "--batch", "16", "--seconds", "0.1"]


def bench(tmp_path, *args) -> tuple[str, dict]:
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, "bench/bench_inference.py", *args, *FAST, "--json", str(out)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout, {x["name"]: x for x in json.loads(out.read_text())["results"]}


@pytest.mark.parametrize("config", ["configs/config.yaml", "configs/production/stage1-base.yaml"])
def test_untrained_takes_the_shape_of_the_config(config, tmp_path):
    from fashioncat.models import count_params, create_model
    from fashioncat.training import load_config

    m = load_config(ROOT / config).model
    params = count_params(create_model(m.arch, widths=m.widths, depths=m.depths))
    stdout, rows = bench(tmp_path, "--untrained", config)
    assert f"the shape of {config}" in stdout
    assert {"PyTorch eager fp32", "ORT fp32", "ORT int8"} <= set(rows)
    # fp32 weights take 4 bytes a parameter (batch norms folded into the convolutions), the graph ~0.1 MB more
    assert 0.9 * 4 * params < rows["ORT fp32"]["bytes"] < 4 * params + 200_000
    assert rows["ORT int8"]["bytes"] < rows["ORT fp32"]["bytes"] / 2
    assert not rows["ORT int8"]["torch_imported"]


def test_untrained_defaults_to_the_production_shape(tmp_path):
    stdout, _ = bench(tmp_path, "--untrained")
    assert "the shape of configs/production/stage2.yaml" in stdout


def test_trained_folder_without_onnx_files_is_exported(tmp_path):
    stdout, rows = bench(tmp_path, "--model", "models/fashioncat", "--onnx-dir", str(tmp_path / "none"))
    assert "models/fashioncat" in stdout
    shipped = (ROOT / "models" / "fashioncat-int8.onnx").stat().st_size
    assert abs(rows["ORT int8"]["bytes"] - shipped) < 0.05 * shipped  # the same model, quantised again


def test_compare_onnx_times_each_model_and_refuses_a_missing_file():
    int8 = "models/fashioncat-int8.onnx"

    def run(*a):
        cmd = [sys.executable, "bench/compare_onnx.py", *a]
        return subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)

    r = run(int8, "models/fashioncat.onnx", "--blocks", "2", "--n", "20")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [x for x in r.stdout.splitlines() if "median" in x and "blocks:" in x]
    assert [x.split(":")[0].strip() for x in lines] == [int8, "models/fashioncat.onnx"], r.stdout
    assert all(len(x.split("blocks:")[1].split()) == 2 for x in lines), r.stdout
    r = run(int8, "no/such.onnx")
    assert r.returncode != 0 and "not found: no/such.onnx" in r.stderr


def test_bench_training_times_each_precision_training_would_use():
    "bench/bench_training.py: one row per thread count, fp32 and (where the CPU has bf16 units) bf16 autocast."
    from fashioncat.training import cpu_has_bf16

    cmd = [sys.executable, "bench/bench_training.py", "--config", "configs/config.yaml", "--threads", "1,2"]
    r = subprocess.run(
        [*cmd, "--seconds", "0.2", "--batch", "16"], check=False, cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in r.stdout.splitlines() if line.startswith("| ") and "threads" not in line]
    assert [row[0].strip() for row in rows] == ["1", "2"], r.stdout
    assert all(len(row) == (3 if cpu_has_bf16() else 1) + 1 for row in rows), r.stdout
    assert all(float(c.replace(",", "")) > 0 for row in rows for c in row[1 : 2 + cpu_has_bf16()]), r.stdout
    assert "configs/config.yaml: resnet" in r.stdout and "batch 16" in r.stdout


def test_big_photos_reports_the_servers_peak_memory(tmp_path):
    "bench/big_photos.py: every photo answered, and a peak RSS at least the idle one (the figures are not checked)."
    out = tmp_path / "big.json"
    cmd = [sys.executable, "bench/big_photos.py", "--n", "3", "--bursts", "1", "--batches", "2", "--batch-mb", "2"]
    cmd += ["--width", "2600", "--height", "2000", "--json", str(out)]
    r = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert (res["n"], res["statuses"], res["errors"], res["malloc_arena_max"]) == (3, [200], [], 2), res
    assert res["peak_rss_mb"] >= res["idle_rss_mb"] > 50, res
    assert "3 x 2600x2000 RGBA PNG" in r.stdout and "peak" in r.stdout and "small requests p95" in r.stdout
    assert res["json_batches"]["statuses"] == {"200": 2} and res["ready_after"] == 200, res


def test_load_compare_takes_medians_and_knows_which_way_is_worse(monkeypatch):
    "bench/load_compare.py: the median over rounds, after/before, regressed when worse by more than the tolerance."
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import load_compare

    def row(tree, mean, p95, cpu, rss, rps):
        figures = {"mean_ms": mean, "p95_ms": p95, "p99_ms": 20.0, "cpu_share": cpu, "rss_peak_mb": rss, "max_rps": rps}
        return {"input": "png", "tree": tree, **figures}

    raw = [row("before", 4.0, 10, 0.20, 300, 800), row("after", 5.6, 10.9, 0.10, 200, 650)]
    raw += [row("before", 6.0, 10, 0.20, 300, 900), row("after", 99.0, 10.9, 0.10, 200, 700)]
    raw += [row("before", 5.0, 10, 0.20, 300, 800), row("after", 5.2, 10.9, 0.10, 200, 760)]
    res = load_compare.summarise(raw, 0.10)
    assert res["medians"]["png"]["mean_ms"] == {"before": 5.0, "after": 5.6}  # the outlier round does not count
    ratios = res["ratios"]["png"]
    assert ratios["mean_ms"] == pytest.approx(1.12) and ratios["p95_ms"] == pytest.approx(1.09)
    # max_rps falls by 12.5%: worse; CPU and memory fall: better; p95 rises by 9%: within the tolerance
    assert res["regressed"] == ["png mean_ms", "png max_rps"]
    assert load_compare.summarise(raw, 0.20)["regressed"] == []
    args = load_compare.parse_args(["--quick", "--inputs", "jpeg"])
    assert (args.rounds, args.duration, args.inputs, args.rev) == (1, 5, ["jpeg"], "547d33d")
    for bad in (["--inputs", "png,gif"], ["--rounds", "0"], ["--tolerance", "1.5"]):
        with pytest.raises(SystemExit):
            load_compare.parse_args(bad)
