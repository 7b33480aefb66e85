"""Weight averaging of two models trained apart from the same seed ("model soup"): validation along the straight line
between their weights, as is and with batch-norm statistics re-estimated on 40 augmented training batches.

    PYTHONPATH=. .venv/bin/python experiments/soup/soup.py teachers/kd-reg512 teachers/kd-bs512 0 0.25 0.5 0.75 1
"""

import copy
import sys

import torch

from fashioncat.data import ArrayDL, BatchAug, make_dls
from fashioncat.models import load_model
from fashioncat.training import bn_recalibrate, load_config

torch.set_num_threads(2)
cfg = load_config("configs/production.yaml")
dls = make_dls(cfg.data, seed=cfg.training.seed, device="cpu")  # the recipe's validation split
aug = BatchAug(dls.train.after_batch.cfg)


def val(m):
    m.eval()
    r = n = 0
    with torch.no_grad():
        for xb, yb in dls.valid:
            r += int((m(xb).argmax(-1) == yb).sum())
            n += len(yb)
    return 100 * r / n


def recalibrated(m, batches=40):
    aug.gen.manual_seed(aug.cfg.seed)
    return bn_recalibrate(m, ArrayDL(dls.train.dataset, bs=512, shuffle=True, after_batch=aug), batches)


a, b = load_model(sys.argv[1]), load_model(sys.argv[2])
sa, sb = a.state_dict(), b.state_dict()
print(f"validation accuracy (%) of (1 - t) * {sys.argv[1]} + t * {sys.argv[2]}")
print("   t   as is   BN re-estimated")
for t in map(float, sys.argv[3:]):
    m = copy.deepcopy(a)
    m.load_state_dict({k: (1 - t) * sa[k] + t * sb[k] if sa[k].is_floating_point() else sa[k] for k in sa})
    print(f"{t:5.2f}  {val(m):6.2f}  {val(recalibrated(m)):6.2f}", flush=True)
