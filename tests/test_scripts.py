"""scripts/: every training candidate is a valid config inside issue 3's and issue 5's budgets; teacher_strength averages what it lists."""

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
torch = pytest.importorskip("torch")  # the dev install has it; the candidates are built as real models


def load_script():
    spec = importlib.util.spec_from_file_location("train_candidates", ROOT / "scripts" / "train_candidates.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


tc = load_script()


@pytest.mark.parametrize("name", list(tc.CANDIDATES))
def test_candidate_is_a_valid_config_within_budget(name, tmp_path):
    from fashioncat.models import count_macs, count_params, create_model
    from fashioncat.training import load_config

    base = yaml.safe_load((ROOT / "configs" / "stage1.yaml").read_text())
    path = tc.candidate(name, base, tmp_path, epochs=3, subset=None, device="cuda")
    cfg = load_config(path)  # unknown or mistyped keys fail here, before any GPU time is spent
    m = cfg.model
    model = create_model(m.arch, widths=m.widths, depths=m.depths, n_classes=m.num_classes, dropout=m.dropout)
    params, macs = count_params(model), count_macs(model)
    if name not in tc.TEACHER_ONLY:  # teachers are never served
        assert params <= 2_000_000, f"{name}: {params:,} parameters, issue 3 allows 2 M"
        assert macs <= 60_000_000, f"{name}: {macs:,} multiply-adds, over the ~60 M that keeps issue 5's int8 speed"
    else:  # scripts/gpu_train.sh returns a teacher as fp16, in one file under the 16 MiB a lent machine gives back
        assert params * 2 < 15 * 2**20, f"{name}: {params:,} parameters, too big to come back from a lent GPU machine"
    assert cfg is not None and (tmp_path / name / "config.yaml").exists()


@pytest.mark.parametrize("name", [n for n in tc.CANDIDATES if n.endswith("-t5")])
def test_next_students_find_their_teachers(name):
    "The next lease's students start from and distil from models in git, or from the big teachers its first call trains."
    from fashioncat.models import load_model

    c = tc.CANDIDATES[name]
    for p in [*c["training.teachers"], c.get("training.init_from")]:
        if p is None:
            continue
        if p.startswith(".teachers/"):  # left there by scripts/gpu_train.sh's first call in the same lease
            n = p.removeprefix(".teachers/")
            assert n.startswith("t-") and n in tc.CANDIDATES, f"{name}: {p} is not trained by any t-* candidate"
        else:
            assert (ROOT / p / "model.safetensors").exists(), f"{name}: {p} is not in the checkout"
            with torch.no_grad():  # a complete model folder: it loads and predicts the ten classes
                assert load_model(ROOT / p).eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_unpack_teachers_puts_each_best_model_where_the_second_call_and_git_want_it(tmp_path):
    "A returned t-*.tgz (as gpu_train.sh archives it) lands in .teachers/<name> and teachers/<name>; other archives do not."
    import subprocess
    import tarfile

    files = tmp_path / "files"
    files.mkdir()
    for n in ("t-a", "kd-b"):
        best = tmp_path / "runs" / n / "models" / "best_model"
        best.mkdir(parents=True)
        (best / "config.json").write_text(f'{{"name": "{n}"}}')
        with tarfile.open(files / f"{n}.tgz", "w:gz") as t:
            t.add(tmp_path / "runs" / n, arcname=n)
    repo = tmp_path / "repo"
    repo.mkdir()
    script = ROOT / "scripts" / "unpack_teachers.sh"
    env = {"TEACHERS_ROOT": str(repo), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(["bash", str(script), str(files)], env=env, capture_output=True, text=True, check=True).stdout
    for d in (".teachers", "teachers"):
        assert (repo / d / "t-a" / "config.json").read_text() == '{"name": "t-a"}', out
        assert not (repo / d / "kd-b").exists()
    empty = subprocess.run(["bash", str(script), str(repo)], check=False, env=env, capture_output=True, text=True)
    assert empty.returncode == 1 and "no t-*.tgz" in empty.stdout


def test_teacher_strength_averages_what_it_lists():
    "Two copies of one model: their average is the model itself, with and without the flip."
    import subprocess
    import sys

    model = str(ROOT / "models" / "fashioncat")
    cmd = [sys.executable, str(ROOT / "scripts" / "teacher_strength.py"), model, model, "--limit", "300"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout.splitlines()
    for split in ("validation", "test"):
        i = out.index(split)
        one, two, avg = (line.split()[:2] for line in out[i + 1 : i + 4])
        assert one == two == avg, out
        assert 80 < float(one[0]) <= 100, out  # the shipped model on 300 images
        assert out[i + 3].endswith("the average of the 2")


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
