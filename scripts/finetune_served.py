"""Train on what is served: fine-tune a model folder on training images rendered as shop photos and read by `prepare`.

    nice -n 5 .venv/bin/python scripts/finetune_served.py --out models/candidates/served > finetune.log 2>&1 &

`--n-render` training images (never validation or test) are rendered, each as one kind of `fashioncat.catalogue`
(kinds in turn, those in `--more-kinds` once more a turn; seeds from `--seed0`, 1,000,000 by default, so that no
benchmark photo is reused, and a further round can draw new photos of the same images) and read back through
`fashioncat.photos.prepare`; the views are cached in `--cache`, and rendered anew when the seeds, the kinds or the code
that renders and reads them (`fashioncat/photos.py`, `catalogue.py`, `ood.py`) change. Each batch is half raw training images, half such
views (horizontal flips as in the recipe), plus `--oe-batch` outliers (`fashioncat.ood`, the kinds not held out of
calibration, seeds apart from it). The loss is label-smoothed cross-entropy plus distillation from the starting
model's answer on the raw image (for a view too: the network learns to answer on the photo what it answered on the
clean image), plus outlier exposure (cross-entropy to the uniform answer on the outliers, weight `--oe`), which the
not-a-product judgement reads. bf16 autocast on CPUs that have it. The folder written
has the starting config with a `finetune` record (time, epochs, validation accuracy raw and as photos); export and
gate it with `fashioncat_export --model OUT --out DIR` and `fashioncat_gate`.
"""

import argparse
import hashlib
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fashioncat.catalogue import SHOP_KINDS, shop_photo
from fashioncat.data import recipe_split
from fashioncat.models import load_model, read_config, save_model
from fashioncat.ood import HELD_OUT, OUTLIER_KINDS, outlier_views
from fashioncat.photos import ServingError, prepare
from fashioncat.training import git_commit

SEED0 = 1_000_000


def render(args) -> np.ndarray:
    "Views of images `xs` (their indices `idx` pick kind and seed); a refused photo keeps the raw image."
    xs, idx, kinds, seed0 = args
    out = []
    for x, i in zip(xs, idx):
        try:
            out.append(prepare(shop_photo(x, kinds[int(i) % len(kinds)], seed=seed0 + int(i))))
        except ServingError:
            out.append(x)
    return np.stack(out)


def views_of(x: np.ndarray, idx: np.ndarray, workers: int, kinds=SHOP_KINDS, seed0: int = SEED0) -> np.ndarray:
    jobs = [(x[idx[j : j + 250]], idx[j : j + 250], kinds, seed0) for j in range(0, len(idx), 250)]
    with ProcessPoolExecutor(workers) as ex:
        return np.concatenate(list(ex.map(render, jobs)))


def batches(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)


def outliers_of(n: int, workers: int) -> np.ndarray:
    "Views of `n` outliers of the kinds calibration may see (never `HELD_OUT`), seeds from 7,000,000."
    kinds = [k for k in OUTLIER_KINDS if k not in HELD_OUT]
    per = -(-n // len(kinds))
    jobs = [(k, min(100, per - j), 7_000_000 + j) for k in kinds for j in range(0, per, 100)]
    with ProcessPoolExecutor(workers) as ex:
        return np.concatenate([v for v, _ in ex.map(_outliers, jobs)])


def _outliers(args):
    return outlier_views(*args)


@torch.no_grad()
def logits_of(model, x, bs=1000) -> torch.Tensor:
    model.eval()
    return torch.cat([model(batches(x[i : i + bs])).float() for i in range(0, len(x), bs)])


@torch.no_grad()
def accuracy(model, x, y, bs=1000) -> float:
    model.eval()
    p = torch.cat([model(batches(x[i : i + bs])).argmax(1) for i in range(0, len(x), bs)])
    return float((p.numpy() == y).mean())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(ROOT / "models/fashioncat"))
    p.add_argument("--out", default=str(ROOT / "models/candidates/served"))
    p.add_argument("--n-render", type=int, default=12000)
    p.add_argument("--n-valid-render", type=int, default=1800)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--bs", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--distill", type=float, default=1.0)
    p.add_argument("--n-outliers", type=int, default=3000, help="outlier views for outlier exposure (0: none)")
    p.add_argument("--oe", type=float, default=0.5, help="weight of the outlier-exposure loss")
    p.add_argument("--oe-batch", type=int, default=48)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default="/tmp/fashioncat_served_views.npz")
    p.add_argument(
        "--seed0", type=int, default=SEED0, help="first render seed (a further round: new photos of the same images)"
    )
    p.add_argument(
        "--more-kinds",
        default="",
        help="comma-separated kinds rendered once more per cycle of all kinds (the hard ones)",
    )
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    cfg = read_config(a.model)
    xtr, ytr, xva, yva = recipe_split(cfg["recipe"])
    rng = np.random.default_rng(0)
    sel = np.sort(rng.choice(len(xtr), a.n_render, replace=False))
    vsel = np.sort(rng.choice(len(xva), a.n_valid_render, replace=False))
    cache = Path(a.cache)
    kinds = SHOP_KINDS + tuple(k for k in a.more_kinds.split(",") if k)
    if unknown := set(kinds) - set(SHOP_KINDS):
        p.error(f"--more-kinds: unknown kinds {sorted(unknown)}; the kinds are {', '.join(SHOP_KINDS)}")
    recipe = hashlib.sha256(
        b"".join((ROOT / "fashioncat" / f).read_bytes() for f in ("photos.py", "catalogue.py", "ood.py"))
    )
    key = np.array([str(a.seed0), *kinds, recipe.hexdigest()[:16]])  # the photos (first seed, kinds), how they are read
    if (
        cache.exists()
        and (d := np.load(cache))["sel"].shape == sel.shape
        and (d["sel"] == sel).all()
        and "key" in d.files
        and d["key"].shape == key.shape
        and (d["key"] == key).all()
    ):
        vtr, vva, vout = d["vtr"], d["vva"], d["vout"]
    else:
        vtr = views_of(xtr, sel, a.workers, kinds, a.seed0)
        vva = views_of_valid(xva, vsel, a.workers)
        vout = outliers_of(a.n_outliers, a.workers) if a.n_outliers else np.zeros((0, 28, 28), np.uint8)
        np.savez(cache, sel=sel, key=key, vtr=vtr, vva=vva, vout=vout)
    t_render = time.perf_counter() - t0
    print(
        f"rendered {len(vtr)} training, {len(vva)} validation and {len(vout)} outlier views in {t_render:.0f} s",
        flush=True,
    )
    model = load_model(a.model)
    t_logits = logits_of(model, xtr)  # the starting model's answers on the clean training images
    before = {"valid_raw": accuracy(model, xva, yva), "valid_photos": accuracy(model, vva, yva[vsel])}
    print("before:", before, flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.05)
    half = a.bs // 2
    steps_per_epoch = len(vtr) // half
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=steps_per_epoch * a.epochs, pct_start=0.15)
    bf16 = True
    history = []
    for ep in range(a.epochs):
        model.train()
        order = rng.permutation(len(vtr))
        tl = time.perf_counter()
        for s in range(steps_per_epoch):
            iv = order[s * half : (s + 1) * half]
            ir = rng.integers(0, len(xtr), half)
            io_ = rng.integers(0, len(vout), a.oe_batch if len(vout) else 0)
            x = batches(np.concatenate([xtr[ir], vtr[iv], vout[io_]]))
            y = torch.from_numpy(np.concatenate([ytr[ir], ytr[sel[iv]]]))
            zt = torch.cat([t_logits[ir], t_logits[sel[iv]]])
            flip = torch.rand(len(x)) < 0.5
            x[flip] = x[flip].flip(-1)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                z = model(x).float()
            z, zo = z[: len(y)], z[len(y) :]
            loss = F.cross_entropy(z, y, label_smoothing=0.1)
            kd = F.kl_div(F.log_softmax(z / 2, 1), F.softmax(zt / 2, 1), reduction="batchmean") * 4
            oe = -F.log_softmax(zo, 1).mean() if len(zo) else torch.zeros(())
            (loss + a.distill * kd + a.oe * oe).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            if s % 20 == 0:
                print(
                    f"epoch {ep} step {s}/{steps_per_epoch} loss {loss.item():.4f} kd {kd.item():.4f} oe {oe.item():.4f}",
                    flush=True,
                )
        h = {
            "epoch": ep,
            "seconds": round(time.perf_counter() - tl, 1),
            "valid_raw": accuracy(model, xva, yva),
            "valid_photos": accuracy(model, vva, yva[vsel]),
        }
        history.append(h)
        print(h, flush=True)
    secs = time.perf_counter() - t0
    extra = {
        k: v
        for k, v in cfg.items()
        if k
        not in (
            "model_type",
            "arch",
            "arch_kwargs",
            "mean",
            "std",
            "num_classes",
            "id2label",
            "label2id",
            "class_names",
            "class_names_ru",
        )
    }
    extra["commit"] = git_commit(ROOT)  # the code that fine-tuned it: the model's version
    extra["finetune"] = {
        "from": str(a.model),
        "command": " ".join(sys.argv),
        "seconds": round(secs, 1),
        "render_seconds": round(t_render, 1),
        "n_render": a.n_render,
        "seed0": a.seed0,
        "kinds": list(kinds),
        "epochs": a.epochs,
        "lr": a.lr,
        "distill": a.distill,
        "n_outliers": len(vout),
        "oe": a.oe,
        "before": before,
        "history": history,
        "hardware": f"CPU, {a.threads} threads, bf16 autocast, nice 5, machine shared with other jobs",
    }
    extra["metrics"] = {"valid_accuracy": history[-1]["valid_raw"], "epoch": a.epochs}
    model.eval()
    save_model(model, a.out, **extra)
    print(f"written {a.out} after {secs:.0f} s", flush=True)


def views_of_valid(xva, vsel, workers):
    "Validation views, seeds apart from the training ones."
    jobs = [
        (xva[vsel[j : j + 250]], vsel[j : j + 250] + 2_000_000, SHOP_KINDS, SEED0) for j in range(0, len(vsel), 250)
    ]
    with ProcessPoolExecutor(workers) as ex:
        return np.concatenate(list(ex.map(render, jobs)))


if __name__ == "__main__":
    main()
