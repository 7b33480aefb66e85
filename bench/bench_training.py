"""Training speed on this CPU: images per second of a training step (forward, loss, backward, optimiser step) for a
training config's network, in fp32 and under bfloat16 autocast, on 1 and 2 threads.

It times what `fashioncat.training` does on a CPU: the model in `channels_last` (fastai's `ChannelsLast`), Adam, label
smoothing, and with `CPUBf16` the forward and the loss under bf16 autocast (weights, gradients and optimiser in fp32).
The bf16 row runs only where `cpu_has_bf16()` (AVX512-BF16 or AMX), as in training. Inputs are random images: the
speed does not depend on the pixels. Data loading and augmentation are not timed.

    .venv/bin/python bench/bench_training.py                             # configs/production/stage2.yaml's network
    .venv/bin/python bench/bench_training.py --config configs/config.yaml --threads 2
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from fashioncat.models import count_params
from fashioncat.training import cpu_has_bf16, hardware, load_config, model_from_config

ROOT = Path(__file__).resolve().parents[1]


def images_per_s(model, batch: int, seconds: float, bf16: bool, smoothing: float) -> float:
    "Training steps on random batches for about `seconds` after two warm-up steps; images per second."
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    n, t0 = -2, None
    while t0 is None or time.perf_counter() - t0 < seconds:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=smoothing)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        n += 1
        if n == 0:
            t0 = time.perf_counter()
    return n * batch / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/production/stage2.yaml", help="training config whose network is timed")
    p.add_argument("--batch", type=int, help="batch size (default: the config's)")
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    p.add_argument("--seconds", type=float, default=10.0, help="time spent per configuration")
    a = p.parse_args(argv)
    machine = hardware("cpu")  # as a training run here records it (torch's default threads)
    cfg = load_config(ROOT / a.config)
    batch = a.batch or cfg.data.batch_size
    precisions = ["fp32", "bf16 autocast"] if cpu_has_bf16() else ["fp32"]
    torch.manual_seed(0)
    base = model_from_config(cfg.model).to(memory_format=torch.channels_last)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    load0 = os.getloadavg()[0]
    rows = []
    for threads in [int(t) for t in a.threads.split(",")]:
        torch.set_num_threads(threads)
        row = {}
        for prec in precisions:
            base.load_state_dict(state)  # every configuration starts from the same weights
            row[prec] = images_per_s(base, batch, a.seconds, prec != "fp32", cfg.training.label_smoothing)
            print(f"  {threads} thread(s), {prec}: done", file=sys.stderr)
        rows.append((threads, row))
    print(f"`{' '.join(['python', 'bench/bench_training.py'] + (argv if argv is not None else sys.argv[1:]))}`")
    print(
        f"training here: {machine}; {os.cpu_count()} cores; torch "
        f"{torch.__version__}; {a.config}: {cfg.model.arch} {cfg.model.widths}, {count_params(base):,} parameters, "
        f"batch {batch}; load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after\n"
    )
    head = "| threads | " + " | ".join(f"{p} (images/s)" for p in precisions)
    print(head + (" | bf16 / fp32 |" if len(precisions) == 2 else " |"))
    print("|---" * (len(precisions) + 1 + (len(precisions) == 2)) + "|")
    for threads, row in rows:
        cells = " | ".join(f"{row[p]:,.0f}" for p in precisions)
        ratio = f" | {row['bf16 autocast'] / row['fp32']:.1f}x" if len(precisions) == 2 else ""
        print(f"| {threads} | {cells}{ratio} |")
    n_train = round(60_000 * (1 - cfg.data.valid_pct))
    epoch = n_train / rows[-1][1][precisions[-1]]
    print(
        f"\nAt that rate an epoch of {n_train:,} training images takes {epoch:.0f} s of compute ({precisions[-1]}, "
        f"{rows[-1][0]} thread(s)), before data loading, augmentation and validation."
    )


if __name__ == "__main__":
    main()
