"""Regenerate the UI's example photos: one catalogue-style photo per category, from the Fashion-MNIST *test* set.

    .venv/bin/python scripts/make_examples.py      # needs the training install (fashioncat.data)

Deterministic: the first test image of each class, photographed by `catalogue_photo` in a varied style.
"""

from pathlib import Path

import numpy as np

from fashioncat.data import CLASS_NAMES, load_split
from fashioncat.photos import catalogue_photo

KINDS = ["png", "transparent", "grey_bg", "png", "transparent", "png", "grey_bg", "png", "transparent", "png"]


def main(out: Path = Path(__file__).parents[1] / "app" / "examples") -> list[Path]:
    x, y = load_split("test")
    paths = []
    for c, name in enumerate(CLASS_NAMES):
        i = int(np.flatnonzero(y == c)[0])
        p = out / f"{c}_{name.lower().replace('/', '-').replace(' ', '-')}.png"
        p.write_bytes(catalogue_photo(x[i], KINDS[c], seed=100 + c))
        paths.append(p)
    return paths


if __name__ == "__main__":
    for p in main():
        print(p, p.stat().st_size)
