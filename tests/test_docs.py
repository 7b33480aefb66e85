"""The docs: README.md is what nbs/index.ipynb gives, every marked figure is its JSON's, links resolve, and the checks
behind `make check-sync` can fail."""

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import docs_figures
import render_readme

DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
PRODUCT_DOCS = [d for d in DOCS if d.name != "research.md"]  # research.md quotes other models' figures
SOURCES = {src for src, _ in docs_figures.FIGURES.values()}


@pytest.fixture
def repo(tmp_path):
    "A copy of what the docs tooling reads: settings.ini, the README notebook, the docs and the JSON behind them."
    for rel in ["settings.ini", "nbs/index.ipynb", "README.md", "CHANGELOG.md", *SOURCES]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.png"))
    return tmp_path


def test_docs_exist():
    names = {d.relative_to(ROOT).as_posix() for d in DOCS}
    assert {"docs/training.md", "docs/serving.md", "docs/performance.md", "docs/deployment.md"} <= names
    assert {"docs/research.md", "CHANGELOG.md"} <= names


# --- README.md from nbs/index.ipynb ---


def test_readme_is_what_the_notebook_gives():
    assert render_readme.readme_notebook() == ROOT / "nbs" / "index.ipynb"
    assert (ROOT / "README.md").read_text() == render_readme.render(), "run `make readme` and commit README.md"


def test_readme_is_short_and_says_the_essentials():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) < 8 * 1024
    for must in (
        "make test",
        "make serve",
        "curl -F file=@app/examples/1_trouser.png",
        "docs/ui-queue.png",  # the review queue, the UI a merchandiser works in
        "docs/serving.md",
    ):
        assert must in text, must
    assert "#|" not in text and "](../" not in text  # directives applied, links made relative to the root


def test_readme_check_fails_when_readme_differs(repo, capsys):
    assert render_readme.main(["--check", "--root", str(repo)]) == 0
    readme = repo / "README.md"
    readme.write_text(readme.read_text().replace("make serve", "make run", 1))
    assert render_readme.main(["--check", "--root", str(repo)]) == 1
    assert "run `make readme`" in capsys.readouterr().err
    assert render_readme.main(["--root", str(repo)]) == 0  # make readme mends it
    assert render_readme.main(["--check", "--root", str(repo)]) == 0


def test_readme_follows_the_notebook(repo):
    "An edit of the notebook's markdown shows in the README; a `#| hide` cell does not."
    nb_path = repo / "nbs" / "index.ipynb"
    nb = json.loads(nb_path.read_text())
    nb["cells"][0]["source"].append("\nA sentence added to the notebook.")
    nb["cells"].append(
        {"cell_type": "code", "id": "x", "metadata": {}, "outputs": [], "source": ["#| hide\n", "SECRET = 1"]}
    )
    nb_path.write_text(json.dumps(nb))
    text = render_readme.render(repo)
    assert "A sentence added to the notebook." in text and "SECRET" not in text


# --- figures from JSON ---


def test_every_figure_in_the_docs_is_its_json():
    assert docs_figures.stale() == [], "run `make docs` and commit"


def test_the_docs_carry_the_headline_figures():
    marked = {m[1] for d in DOCS for m in docs_figures.MARK.finditer(d.read_text())}
    assert {"accuracy_int8", "accuracy_fp32", "macro_f1", "int8_size", "load_png_p95", "load_png_mean"} <= marked
    nb_marked = {m[1] for m in docs_figures.MARK.finditer((ROOT / "nbs" / "index.ipynb").read_text())}
    assert "accuracy_int8" in nb_marked


def test_headline_figures_are_not_typed_outside_markers():
    "A figure that comes from JSON appears in the product docs only between its markers."
    figs = docs_figures.figures()
    for doc in PRODUCT_DOCS:
        bare = docs_figures.MARK.sub("", doc.read_text())
        for name in ("accuracy_int8", "accuracy_fp32", "valid_accuracy", "macro_f1", "int8_size"):
            assert figs[name] not in bare, f"{doc.name}: {figs[name]} ({name}) typed by hand"


def test_figure_check_fails_when_a_doc_is_wrong(repo, capsys):
    perf = repo / "docs" / "performance.md"
    good = docs_figures.figures(repo)["accuracy_int8"]
    perf.write_text(perf.read_text().replace(f"fig:accuracy_int8 -->{good}<", "fig:accuracy_int8 -->99.99%<", 1))
    assert docs_figures.stale(repo) == [
        f"docs/performance.md: accuracy_int8 says '99.99%', reports/fashioncat/metrics.json gives '{good}'"
    ]
    assert docs_figures.main(["--check", "--root", str(repo)]) == 1
    assert "accuracy_int8" in capsys.readouterr().err
    assert docs_figures.write(repo) == [perf]  # make docs mends it
    assert docs_figures.stale(repo) == []


def test_figure_check_fails_when_the_json_moves(repo):
    "A new report (here: one more image right) makes every doc that quotes the old figure stale, notebook included."
    metrics = repo / "reports" / "fashioncat" / "metrics.json"
    m = json.loads(metrics.read_text())
    m["accuracy"] = round(m["accuracy"] + 0.0001, 4)
    metrics.write_text(json.dumps(m))
    docs = {line.split(":")[0] for line in docs_figures.stale(repo) if ": accuracy_int8 says" in line}
    assert {"README.md", "nbs/index.ipynb", "docs/performance.md", "CHANGELOG.md"} <= docs
    docs_figures.write(repo)
    assert docs_figures.stale(repo) == []
    json.loads((repo / "nbs" / "index.ipynb").read_text())  # still a notebook
    assert f"{100 * m['accuracy']:.2f}%" in (repo / "nbs" / "index.ipynb").read_text()


def test_unknown_figure_is_an_error(repo):
    (repo / "docs" / "extra.md").write_text("<!-- fig:no_such_figure -->1<!-- /fig -->\n")
    with pytest.raises(KeyError, match="no_such_figure"):
        docs_figures.stale(repo)


def test_figure_formats():
    assert docs_figures.pct(0.9536) == "95.36%" and docs_figures.pct(0.125, 1) == "12.5%"
    assert docs_figures.mb(1325831) == "1.33 MB" and docs_figures.rate(1044) == "1,044/s"
    assert docs_figures.weakest({"A": {"recall": 0.9}, "B": {"recall": 0.85}}, "recall") == "0.8500 (B)"


# --- links and wording ---


def _slug(heading: str) -> str:
    "GitHub's anchor for a heading."
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {_slug(m[1]) for m in re.finditer(r"^#+ (.+)$", text, re.MULTILINE)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_links_resolve(doc):
    "Every relative link (and #anchor) in the docs points at a file (and a heading) that exists."
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.DOTALL)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        assert dest.exists(), f"{doc.name}: {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{doc.name}: {target}: no such heading"


def test_commands_name_files_that_exist():
    "The photos the docs' curl lines upload are in the repository."
    for doc in DOCS:
        for rel in re.findall(r"=@([\w./-]+)", doc.read_text()):
            assert (ROOT / rel).exists(), f"{doc.name}: {rel}"


def test_product_docs_tell_no_tracker_story():
    for doc in DOCS:
        assert not re.search(r"\bissue \d+", doc.read_text(), re.IGNORECASE), doc.name
    assert len((ROOT / "docs" / "research.md").read_text().encode()) <= 10 * 1024
