"""Shared fixtures for the service tests: the model (shipped, else a stand-in), real test images, catalogue photos."""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `app` is a plain folder at the root, not an installed package
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# `app.main` builds the app on import, with the UI: it wants a data folder and accounts, or the UI's login off (as
# `make serve` on 127.0.0.1 has it); the tests' servers all bind 127.0.0.1
os.environ.setdefault("FASHIONCAT_DATA_DIR", tempfile.mkdtemp(prefix="fashioncat-tests-"))
os.environ.setdefault("FASHIONCAT_UI_AUTH", "off")
# tests serve the model they name: an installation's models/current (a promoted version) must not stand in for it
os.environ.setdefault("FASHIONCAT_MODELS_DIR", str(ROOT / "tests" / "no-model-versions"))


@pytest.fixture(scope="session")
def model_path(tmp_path_factory):
    "`models/fashioncat-int8.onnx` when committed, else the stand-in (same interface and metadata)."
    from make_standin_model import model_for_tests

    return model_for_tests(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def test_set():
    "The real Fashion-MNIST test images and labels."
    from fashioncat.data import load_split

    return load_split("test")


@pytest.fixture(scope="session")
def photos(test_set):
    "One catalogue-style photo of each kind, from real test images: {kind: (bytes, label)}."
    from fashioncat.photos import PHOTO_KINDS, catalogue_photo

    x, y = test_set
    return {k: (catalogue_photo(x[i], k, seed=i), int(y[i])) for i, k in enumerate(PHOTO_KINDS)}


@pytest.fixture(scope="session")
def sample(test_set):
    "A fixed, class-balanced sample of 50 test indices."
    _, y = test_set
    rng = np.random.default_rng(1)
    return np.concatenate([rng.choice(np.flatnonzero(y == c), 5, replace=False) for c in range(10)])
