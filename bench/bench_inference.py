"""Inference speed and memory of the fashioncat model: PyTorch eager fp32, ONNX Runtime fp32 and ONNX Runtime int8.

Prints one table, measured in one run on this machine: batch-1 latency p50/p95 with 1 and 2 threads, batch-256
throughput with 1 and 2 threads, model file size and peak memory. Every (runtime, threads) pair runs in its own fresh
process, so the peak memory is that process's `ru_maxrss` (ONNX Runtime processes import neither torch nor fashioncat,
as in the service). CUDA rows (PyTorch, ORT CUDA, ORT TensorRT) are added only where CUDA is available.

    .venv/bin/python bench/bench_inference.py --model models/fashioncat --onnx-dir models   # the shipped files
    .venv/bin/python bench/bench_inference.py --untrained            # production shape, random weights: speed only
    .venv/bin/python bench/bench_inference.py --untrained configs/long.yaml   # any training config's shape
    .venv/bin/python bench/bench_inference.py --untrained --compare-quant   # adds int8 with S8S8 activations

ONNX files missing from --onnx-dir are exported (and quantised) from --model into a temporary folder first. Inputs are
real Fashion-MNIST test images. On a shared CPU the figures are noisy: the header prints the load average.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = ROOT / "configs" / "production" / "stage2.yaml"  # --untrained's default shape: the shipped network
GOALS = {"p95_ms": 0.5, "images_per_s": 5000, "max_bytes": 2_000_000}  # issue 5, for the int8 model


# ---------------------------------------------------------------- child: one runtime, one thread count, one process
def _ort_session(path: str, threads: int, provider: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as fashioncat.serving.Engine
    s = ort.InferenceSession(path, so, providers=[provider, "CPUExecutionProvider"])
    return lambda x: s.run(["probs"], {"image": x})[0]


def _torch_fn(folder: str, threads: int, device: str):
    import torch

    from fashioncat.models import load_model

    torch.set_num_threads(threads)
    m = load_model(folder, device)

    def run(x):
        with torch.inference_mode():
            y = m(torch.from_numpy(x).to(device))
            return y.cpu().numpy()

    return run


def child(spec: dict) -> dict:
    "Time one configuration; returns latency, throughput and peak RSS."
    x = np.load(spec["inputs"])
    if spec["runtime"] == "pytorch":
        fn = _torch_fn(spec["path"], spec["threads"], spec.get("device", "cpu"))
    else:
        fn = _ort_session(spec["path"], spec["threads"], spec.get("provider", "CPUExecutionProvider"))
    x1, xb = x[:1], x[: spec["batch"]]
    for i in range(50):
        fn(x[i : i + 1])
    t = np.empty(spec["n"])
    for i in range(spec["n"]):
        t0 = time.perf_counter()
        fn(x1)
        t[i] = time.perf_counter() - t0
    fn(xb)
    k, t0 = 0, time.perf_counter()
    while k < 3 or time.perf_counter() - t0 < spec["seconds"]:
        fn(xb)
        k += 1
    ips = spec["batch"] * k / (time.perf_counter() - t0)
    return {
        "p50_ms": float(np.percentile(t, 50) * 1e3),
        "p95_ms": float(np.percentile(t, 95) * 1e3),
        "images_per_s": ips,
        "peak_rss_mib": peak_rss_mib(),
        "torch_imported": "torch" in sys.modules,
    }


def peak_rss_mib() -> float:
    "This process's peak resident memory: VmHWM (ru_maxrss would count the parent's pages from before exec)."
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])}
    r = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if r.returncode:
        raise RuntimeError(f"{spec['name']}: {r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- parent: files, inputs, the table
def prepare(args, tmp: Path) -> tuple[str, dict]:
    "The model folder and the ONNX files to time, exporting what is missing; and the inputs file."
    import torch

    from fashioncat.data import load_split
    from fashioncat.models import read_config, save_model
    from fashioncat.quantization import calibration_images, export_onnx, quantize_int8, recipe_split

    torch.set_num_threads(1)
    if args.untrained:
        from fashioncat.training import load_config, model_from_config

        c = load_config(args.untrained)
        model = model_from_config(c.model).eval()  # as training builds it
        recipe = json.loads(json.dumps(asdict(c)))  # as training saves it: the int8 export calibrates on its split
        folder = save_model(model, tmp / "untrained", recipe=recipe)
        cfg = dict(read_config(folder), seed=0)
        onnx_dir = tmp
    else:
        folder, onnx_dir = Path(args.model), Path(args.onnx_dir)
        cfg = read_config(folder)
    files = {"fp32": onnx_dir / "fashioncat.onnx", "int8": onnx_dir / "fashioncat-int8.onnx"}
    need = [k for k, p in files.items() if not p.exists()] + (["int8 S8S8"] if args.compare_quant else [])
    if need:
        files = {k: (p if p.exists() else tmp / p.name) for k, p in files.items()}
        if not files["fp32"].exists():
            export_onnx(folder, files["fp32"])
        xtr, ytr, _, _ = recipe_split(cfg["recipe"])
        calib = calibration_images(xtr, ytr, 1024)  # as fashioncat_export
        if not files["int8"].exists():
            quantize_int8(files["fp32"], files["int8"], calib)
        if args.compare_quant:
            files["int8 S8S8"] = quantize_int8(
                files["fp32"], tmp / "fashioncat-int8-s8s8.onnx", calib, activations="QInt8"
            )
        print(f"exported to {tmp}: {', '.join(k for k in need)}", file=sys.stderr)
    xte, _ = load_split("test")
    np.save(tmp / "x.npy", np.ascontiguousarray(xte[:512, None].astype(np.float32) / 255.0))
    return str(folder), {k: str(p) for k, p in files.items()}


def configs(folder: str, files: dict, threads: list[int]) -> list[dict]:
    "(name, runtime, path, size, threads, extra) for every row; CUDA rows only when CUDA is there."
    import onnxruntime as ort
    import torch

    rows = [("PyTorch eager fp32", "pytorch", folder, Path(folder) / "model.safetensors", {})]
    rows += [(f"ORT {k}", "ort", p, Path(p), {}) for k, p in files.items()]
    out = [
        dict(name=n, runtime=r, path=p, bytes=f.stat().st_size, threads=t, **e)
        for n, r, p, f, e in rows
        for t in threads
    ]
    skipped = []
    gpu = []
    if torch.cuda.is_available():
        gpu.append(
            ("PyTorch eager fp32 CUDA", "pytorch", folder, Path(folder) / "model.safetensors", {"device": "cuda"})
        )
    else:
        skipped.append("PyTorch CUDA (torch.cuda.is_available() is False)")
    providers = ort.get_available_providers()
    for prov, label in (("CUDAExecutionProvider", "ORT CUDA"), ("TensorrtExecutionProvider", "ORT TensorRT")):
        if prov in providers:
            gpu += [(f"{label} {k}", "ort", p, Path(p), {"provider": prov}) for k, p in files.items()]
        else:
            skipped.append(f"{label} (no {prov} in this onnxruntime: {', '.join(providers)})")
    out += [dict(name=n, runtime=r, path=p, bytes=f.stat().st_size, threads=1, **e) for n, r, p, f, e in gpu]
    return out, skipped


def table(results: list[dict], threads: list[int]) -> str:
    "The markdown table: one line per runtime."
    by = {}
    for r in results:
        by.setdefault(r["name"], {})[r["threads"]] = r
    head = ["runtime", "size"]
    for t in threads:
        head += [f"b1 p50 {t}t (ms)", f"b1 p95 {t}t (ms)"]
    head += [f"b{results[0]['batch']} {t}t (img/s)" for t in threads] + ["peak RSS (MiB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, d in by.items():
        any_ = next(iter(d.values()))
        cells = [name, f"{any_['bytes'] / 1e6:.2f} MB"]
        for t in threads:
            cells += [f"{d[t]['p50_ms']:.3f}", f"{d[t]['p95_ms']:.3f}"] if t in d else ["", ""]
        cells += [f"{d[t]['images_per_s']:,.0f}" if t in d else "" for t in threads]
        cells.append(f"{max(r['peak_rss_mib'] for r in d.values()):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals(results: list[dict]) -> list[str]:
    "The issue's goals for the int8 model, PASS or FAIL as measured."
    r = {(x["name"], x["threads"]): x for x in results}
    one, two = r.get(("ORT int8", 1)), r.get(("ORT int8", 2))
    out = []
    if one:
        ok = one["p95_ms"] <= GOALS["p95_ms"]
        out.append(
            f"int8 batch-1 p95, 1 thread: {one['p95_ms']:.3f} ms (goal <= {GOALS['p95_ms']}): {'PASS' if ok else 'FAIL'}"
        )
        ok = one["bytes"] <= GOALS["max_bytes"]
        out.append(f"int8 size: {one['bytes']:,} bytes (goal <= {GOALS['max_bytes']:,}): {'PASS' if ok else 'FAIL'}")
    if two:
        ok = two["images_per_s"] >= GOALS["images_per_s"]
        out.append(
            f"int8 batch-256, 2 threads: {two['images_per_s']:,.0f} images/s (goal >= {GOALS['images_per_s']:,}): {'PASS' if ok else 'FAIL'}"
        )
    return out


def shown(path: str) -> str:
    "A path as the reader knows it: relative to the repository when inside it."
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else path


def main():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="models/fashioncat", help="trained model folder (PyTorch row; export source)")
    p.add_argument("--onnx-dir", default="models", help="folder with fashioncat.onnx and fashioncat-int8.onnx")
    p.add_argument(
        "--untrained",
        nargs="?",
        const=str(PRODUCTION),
        metavar="CONFIG",
        help="random weights in the shape of a training config, configs/production/stage2.yaml if none is named (speed only)",
    )
    p.add_argument("--compare-quant", action="store_true", help="also time int8 with S8S8 (signed) activations")
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    p.add_argument("--n", type=int, default=1000, help="batch-1 calls timed per configuration")
    p.add_argument("--batch", type=int, default=256, help="throughput batch size")
    p.add_argument("--seconds", type=float, default=2.0, help="throughput: time spent per configuration")
    p.add_argument("--json", help="also write every figure to this JSON file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    threads = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        folder, files = prepare(args, tmp)
        rows, skipped = configs(folder, files, threads)
        load0 = os.getloadavg()
        results = []
        for spec in rows:
            spec.update(inputs=str(tmp / "x.npy"), n=args.n, batch=args.batch, seconds=args.seconds)
            results.append({**spec, **run_child(spec)})
            print(f"  {spec['name']}, {spec['threads']} thread(s): done", file=sys.stderr)
        load1 = os.getloadavg()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    import onnxruntime as ort
    import torch

    print(f"`{' '.join(['python', 'bench/bench_inference.py'] + sys.argv[1:])}`")
    print(
        f"{cpu}, {os.cpu_count()} cores; torch {torch.__version__}, onnxruntime {ort.__version__}; "
        f"model: {f'untrained, the shape of {shown(args.untrained)}' if args.untrained else folder}; "
        f"load average {load0[0]:.2f} before, {load1[0]:.2f} after"
        + (" (the CPU was shared: figures are noisy)" if max(load0[0], load1[0]) > 0.5 else "")
    )
    print()
    print(table(results, threads))
    print()
    for line in goals(results):
        print(f"- {line}")
    for s in skipped:
        print(f"- skipped: {s}")
    if any(r["runtime"] == "ort" and r["torch_imported"] for r in results):
        print("- warning: an ONNX Runtime process imported torch; its peak RSS is not the service's")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        keep = [{k: v for k, v in r.items() if k not in ("inputs", "path")} for r in results]
        Path(args.json).write_text(
            json.dumps({"results": keep, "skipped": skipped, "load": [load0, load1]}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
