"""Time a retrain from corrections on this machine: what `fashioncat_retrain` does, step by step.

The corrections are real training images that the committed model gets wrong, with their true categories (what a
merchandiser would choose), plus one "not a product" row; the champion is a copy of the committed model in a temporary
models folder, with its own MLflow store. The run fine-tunes it for `--epochs` epochs on the whole training set plus the
corrections (bf16 autocast where the CPU has it), then calibrates, exports, evaluates and gates the candidate, and
registers it as the challenger. Prints each step's wall seconds and CPU seconds (this process's user + system time)
and writes them to bench/results/retrain_<cpu>.json. On a machine that others share, wall time measures the sharing;
the JSON's `idle_estimate` is the machine-alone time from CPU seconds: training's divided by the threads it runs on
(torch's two), the steps after it (calibration, export, evaluation, gate: partly one-threaded) counted in full, so an
upper bound; the measured epochs are scaled to `RETRAIN`'s.

    .venv/bin/python bench/bench_retrain.py                  # the default fine-tune (fashioncat.pipeline.RETRAIN)
    .venv/bin/python bench/bench_retrain.py --epochs 1       # one epoch, to extrapolate on a busy machine
"""

import argparse
import json
import os
import re
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fashioncat.data import load_split
from fashioncat.evaluation import Predictor
from fashioncat.pipeline import RETRAIN, VERSION_FILES, champion_paths, retrain_pipeline, run_pipeline, split_feedback
from fashioncat.training import cpu_has_bf16, hardware

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    "User + system CPU seconds of this process (all its threads) so far."
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def corrections_csv(path: Path, models: Path, n_scan: int) -> int:
    "Write a corrections export of the training images among the first `n_scan` that the champion gets wrong."
    x, y = load_split("train")
    pred = Predictor(champion_paths(models)[0], threads=2)(x[:n_scan])[1].argmax(1)
    wrong = np.flatnonzero(pred != y[:n_scan])
    with open(path, "w") as f:
        f.write("id,chosen,chosen_index,pixels\n")
        f.writelines(f"{i},,{y[i]},{' '.join(map(str, x[i].ravel()))}\n" for i in wrong)
        f.write(f"-1,not a product,,{' '.join(map(str, x[0].ravel()))}\n")
    return len(wrong)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=RETRAIN["epochs"])
    p.add_argument("--scan", type=int, default=20000, help="training images searched for the champion's mistakes")
    p.add_argument("--out", default=None, help="JSON to write (default: bench/results/retrain_<cpu>.json)")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="retrain-bench-"))
    models = work / "models"
    models.mkdir()
    for f in VERSION_FILES[:3]:
        shutil.copyfile(ROOT / "models" / f, models / f)
    shutil.copytree(ROOT / "models" / "fashioncat", models / "fashioncat")
    os.environ["FASHIONCAT_TRACKING_URI"] = f"sqlite:///{work / 'mlruns.db'}"
    n = corrections_csv(work / "corrections.csv", models, a.scan)
    t0, steps, cpu, last = time.time(), {}, {}, [time.time(), cpu_seconds()]

    def log(msg: str):
        now, c = time.time(), cpu_seconds()
        print(f"{now - t0:7.1f}s wall {c:7.1f}s CPU  {msg}", flush=True)
        m = re.match(r"(\w[\w-]*): (?!done)", msg)
        if m:
            steps[m.group(1)] = round(steps.get(m.group(1), 0) + now - last[0], 1)
            cpu[m.group(1)] = round(cpu.get(m.group(1), 0) + c - last[1], 1)
        last[:] = [now, c]

    s = split_feedback([work / "corrections.csv"], work / "rt" / "corrections")
    pipe = retrain_pipeline(champion_paths(models)[1], work / "rt" / "corrections" / "train.csv", a.epochs)
    r = run_pipeline(pipe, work / "rt", models, feedback=s, promote_if_passed=False, log=log)
    total = time.time() - t0
    res = {
        "hardware": hardware("cpu"),
        "cores": os.cpu_count(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "bf16": cpu_has_bf16(),
        "load_average_at_end": os.getloadavg()[0],
        "epochs": a.epochs,
        "corrections": {"found": n, "train": s["train"], "holdout": s["holdout"]},
        "seconds": dict(total=round(total, 1), **steps),
        "cpu_seconds": cpu,
        "gate_passed": r["gate"]["passed"],
        "gate_failures": r["gate"]["failures"],
        "test_accuracy": json.loads((work / "rt" / "candidate" / "report" / "metrics.json").read_text())["accuracy"],
    }
    threads = torch.get_num_threads()
    train_cpu = sum(v for k, v in cpu.items() if k == "finetune")
    after = sum(v for k, v in cpu.items() if k in ("calibrate", "export", "evaluate", "gate"))
    per_epoch = train_cpu / a.epochs / threads
    res["idle_estimate"] = {
        "threads": threads,
        "epoch_s": round(per_epoch, 1),
        "after_training_s": round(after, 1),
        "retrain_epochs": RETRAIN["epochs"],
        "total_s": round(RETRAIN["epochs"] * per_epoch + after, 1),
        "how": "training: CPU seconds / threads, epochs scaled to retrain_epochs; the steps after it: CPU seconds",
    }
    print(json.dumps(res, indent=1))
    cpu = re.sub(r"[^a-z0-9]+", "-", res["hardware"].lower()).strip("-").split("-")[:2]
    out = Path(a.out or ROOT / "bench" / "results" / f"retrain_{'-'.join(cpu)}.json")
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"written: {out}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
