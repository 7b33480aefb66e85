"""Post-hoc check of distill-flip's saved models: validation as saved, and after re-estimating batch-norm statistics on
augmented training images as fashioncat.training.SWA now does (20 batches), and on all of them. The run itself
re-estimated them on un-augmented images (the code before commit 4affe06).

    PYTHONPATH=. .venv/bin/python experiments/distill_flip/posthoc_bn.py   # with models/distill-flip/ from the run
"""

import copy

import torch

from fashioncat.data import ArrayDL, BatchAug, make_dls
from fashioncat.models import load_model
from fashioncat.training import bn_recalibrate, load_config

torch.set_num_threads(2)
cfg = load_config("configs/distill-flip.yaml")
cfg.data.augment.seed = cfg.training.seed
dls = make_dls(cfg.data, seed=cfg.training.seed, device="cpu")
aug = BatchAug(dls.train.after_batch.cfg)


def val(m):
    m.eval()
    r = n = 0
    with torch.no_grad():
        for xb, yb in dls.valid:
            r += int((m(xb).argmax(-1) == yb).sum())
            n += len(yb)
    return r / n


for name in ("best_model", "final_model", "swa_model"):
    m = load_model(f"models/distill-flip/{name}")
    a0 = val(m)
    aug.gen.manual_seed(aug.cfg.seed)
    dl = ArrayDL(dls.train.dataset, bs=512, shuffle=False, after_batch=aug)
    m2 = bn_recalibrate(copy.deepcopy(m), dl, 20)
    a1 = val(m2)
    aug.gen.manual_seed(aug.cfg.seed)
    m3 = bn_recalibrate(copy.deepcopy(m), dl, None)
    a2 = val(m3)
    print(
        name,
        "as saved",
        round(a0 * 100, 2),
        "BN on 20 augmented batches",
        round(a1 * 100, 2),
        "BN on all augmented",
        round(a2 * 100, 2),
        flush=True,
    )
