"""scripts/: the notebook runner keeps the document, the UI screenshot picks the right photos."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
torch = pytest.importorskip("torch")  # the dev install has it; the candidates are built as real models


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_run_notebooks_keeps_the_document_and_drops_the_noise(tmp_path):
    "Tables and prints stay; stderr, unasked-for stdout, hidden and slow cells do not; temp folders are scrubbed."
    import json
    import tempfile

    from execnb.nbio import mk_cell, new_nb, read_nb, write_nb

    rn = _load("run_notebooks")
    tmp = tempfile.mkdtemp()
    cells = [
        f"print('shown', {tmp!r})",
        "import sys; _ = sys.stderr.write('a log line')",
        "import builtins; builtins.print.__call__('not asked for')",
        "#| hide\nprint('hidden')",
        "#| slow\nprint('slow')",
        "6 * 7",
    ]
    path = tmp_path / "nb.ipynb"
    write_nb(new_nb([mk_cell(c) for c in cells]), path)
    assert rn.run(path, {"slow"})
    outs = [c.get("outputs", []) for c in read_nb(path).cells]
    assert [o.text for o in outs[0]] == [["shown <tmp>\n"]], json.dumps(outs[0])
    assert outs[1] == outs[2] == outs[3] == outs[4] == []
    assert outs[5][0].data["text/plain"] == ["42"]
    write_nb(new_nb([mk_cell("1 / 0"), mk_cell("open('ran-on', 'w')")]), path)
    before = path.read_text()
    assert not rn.run(path, set()) and path.read_text() == before  # an error leaves the notebook as it was
    assert not (tmp_path / "ran-on").exists()  # and stops it there


def test_ui_screenshot_photos_are_three_sure_and_one_doubtful(tmp_path):
    "The screenshot's photos: three accepted answers of different classes, then one the model flags for review."
    from fashioncat.serving import Engine

    files = _load("ui_screenshot").photos(tmp_path, ROOT / "models" / "fashioncat-int8.onnx")
    res = Engine(ROOT / "models" / "fashioncat-int8.onnx").predict_images([f.read_bytes() for f in files])
    assert [r["needs_review"] for r in res] == [False, False, False, True], res
    assert len({f.name.split("-")[0] for f in files[:3]}) == 3 and [f.suffix for f in files] == [
        ".jpg",
        ".png",
        ".webp",
        ".jpg",
    ]
