"""How strong a set of distillation teachers is: each model's accuracy and their average's, with and without test-time flip.

The average is of the probabilities softened at the distillation temperature (`training.distill_temperature`), the
targets `fashioncat.training.Distill` gives a student (with `training.distill_flip`, the flip column). Validation is the
first model's recipe split (the students are chosen on it); test is read for the record, never to choose.

    python scripts/teacher_strength.py teachers/kd-reg512 teachers/kd-bs512 teachers/deep4-bs256 --temperature 2   # teachers/README.md
"""

import argparse

import numpy as np
import torch

from fashioncat.data import load_split, recipe_split
from fashioncat.models import _logits_and_flipped, load_model, read_config
from fashioncat.serving import as_batch


def probs(model, x: np.ndarray, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    "Softened probabilities of `model` on the images `x` (uint8 [N,28,28]) and on their mirror images."
    z, zf = _logits_and_flipped(model, torch.from_numpy(as_batch(x)))  # the helper `tta_gain` uses
    return (z / temperature).softmax(-1), (zf / temperature).softmax(-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="model folders")
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="only the first N images of each split (smoke tests)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    _, _, xva, yva = recipe_split(read_config(a.models[0])["recipe"])
    xte, yte = load_split("test")
    models = [load_model(m) for m in a.models]
    print(f"{'':10s} {'plain':>8s} {'flip':>8s}   (accuracy, %; average: softened at T={a.temperature:g})")
    for split, x, y in (("validation", xva, yva), ("test", xte, yte)):
        x, y = x[: a.limit], torch.from_numpy(np.asarray(y[: a.limit]))
        ps = [probs(m, x, a.temperature) for m in models]

        def acc(p, y=y):
            return 100 * float((p.argmax(-1) == y).float().mean())

        print(split)
        for name, (p, pf) in zip(a.models, ps):
            print(f"  {acc(p):6.2f}   {acc((p + pf) / 2):6.2f}   {name}")
        avg, avg_f = torch.stack([p for p, _ in ps]).mean(0), torch.stack([(p + pf) / 2 for p, pf in ps]).mean(0)
        print(f"  {acc(avg):6.2f}   {acc(avg_f):6.2f}   the average of the {len(models)}", flush=True)


if __name__ == "__main__":
    main()
