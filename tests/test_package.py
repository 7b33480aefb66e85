"""The package layering: the base install needs no torch, training modules say which extra they need."""

import subprocess
import sys

import pytest


def run_py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)


def test_import_fashioncat_loads_no_torch():
    r = run_py("import sys, fashioncat; print(fashioncat.__version__); assert 'torch' not in sys.modules")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().count(".") == 2


@pytest.mark.parametrize(
    "module",
    [
        "fashioncat.data",
        "fashioncat.models",
        "fashioncat.training",
        "fashioncat.callbacks",
        "fashioncat.sweep",
        "fashioncat.evaluation",
        "fashioncat.gate",
        "fashioncat.quantization",
        "fashioncat.pipeline",
    ],
)
def test_training_module_without_torch_names_the_extra(module):
    # `sys.modules['torch'] = None` makes `import torch` fail, as in the base (serving) install.
    r = run_py(f"import sys; sys.modules['torch'] = None; import {module}")
    assert r.returncode != 0
    assert "ImportError" in r.stderr
    assert "pip install -e '.[train]'" in r.stderr
