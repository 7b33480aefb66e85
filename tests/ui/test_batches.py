"""The review UI's batches: the store (versions, conflicts, audit), the workflow (background processing, corrections as
training data, undo), the exports and the REST API, through the app in this process."""

import csv
import io
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from app.ui.batches import EXPORT_COLUMNS, BatchStore, to_csv, to_xlsx
from app.ui.feedback import FeedbackStore


def wait_batch(client, batch_id: str, timeout: float = 60) -> dict:
    "The batch once processed (polled as the page does)."
    for _ in range(int(timeout * 10)):
        b = client.get(f"/ui/review/batches/{batch_id}/rows", params={"limit": 1}).json()["batch"]
        if b["status"] != "processing":
            return b
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} still processing after {timeout} s")


@pytest.fixture(scope="module")
def app_client(model_path, tmp_path_factory):
    "The app (UI included) with an API key, audit share 0.5 (so that a small batch has audited rows), in this process."
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.main import create_app

    d = tmp_path_factory.mktemp("batches")
    s = Settings(model_path=str(model_path), data_dir=str(d), audit_share=0.5, api_keys="k1", reviewer_header="X-User")
    with TestClient(create_app(s, ui=True)) as c:
        yield c


@pytest.fixture(scope="module")
def batch(app_client, test_set, tmp_path_factory):
    "A processed batch of 40 catalogue photos and two bad files: (id, the files' names)."
    from fashioncat.photos import catalogue_photo

    x, _ = test_set
    d = tmp_path_factory.mktemp("photos")
    files = []
    for i in range(40):
        p = d / f"item-{i:02d}.jpg"
        p.write_bytes(catalogue_photo(x[i], "jpeg", seed=i))
        files.append((p.name, p))
    (d / "notes.txt").write_bytes(b"hello")
    (d / "=cmd.png").write_bytes(b"")
    files += [("notes.txt", d / "notes.txt"), ("=cmd.png", d / "=cmd.png")]
    wf = app_client.app.state.workflow
    batch_id = wf.start(files, "Аня", error_ru=lambda r: "ошибка: " + r["error"])
    assert wait_batch(app_client, batch_id)["status"] == "ready"
    return batch_id, [n for n, _ in files]


def rows(client, batch_id, flt="all") -> list[dict]:
    return client.get(f"/ui/review/batches/{batch_id}/rows", params={"filter": flt, "limit": 500}).json()["rows"]


def change(client, batch_id, reviewer="Аня", **c) -> dict:
    r = client.post(f"/ui/review/batches/{batch_id}/changes", json={"reviewer": reviewer, "changes": [c]})
    assert r.status_code == 200, r.text
    return r.json()


def test_batch_rows_keep_upload_order_answers_and_failures(app_client, batch):
    batch_id, names = batch
    got = rows(app_client, batch_id)
    assert [r["filename"] for r in got] == names and [r["idx"] for r in got] == list(range(42))
    ok, failed = got[:40], got[40:]
    assert all(r["source"] == "model" and r["final"] == r["predicted"] and r["version"] == 0 for r in ok)
    assert [(r["source"], r["error"], r["error_ru"]) for r in failed] == [
        ("failed", "not_an_image", "ошибка: not_an_image"), ("failed", "empty", "ошибка: empty")]  # fmt: skip
    engine = app_client.app.state.engine
    (direct,) = engine.predict_images([app_client.app.state.workflow.store.row(batch_id, 3, "image")["image"]])
    assert (got[3]["predicted"], got[3]["confidence"]) == (direct["category"], pytest.approx(direct["confidence"]))
    assert app_client.get(f"/ui/review/batches/{batch_id}/rows/0/thumb").headers["content-type"] == "image/jpeg"
    assert app_client.get(f"/ui/review/batches/{batch_id}/rows/40/thumb").status_code == 404  # failed: no picture


def test_audit_samples_confident_rows_into_the_review_filter(app_client, batch):
    batch_id, _ = batch
    got = rows(app_client, batch_id)
    confident = [r for r in got if r["source"] == "model" and not r["needs_review"]]
    audited = [r for r in confident if r["audit"]]
    assert not any(r["audit"] for r in got if r["needs_review"] or r["source"] == "failed")
    n = len(confident)  # share 0.5 of n: far outside 6 sigma of Binomial(n, 0.5) would mean no sampling at all
    assert abs(len(audited) - n / 2) <= 3 * np.sqrt(n) + 1 and 0 < len(audited) < n
    review = {r["idx"] for r in rows(app_client, batch_id, "review")}
    assert review == {r["idx"] for r in got if r["needs_review"] or r["audit"]}


def test_correction_conflict_undo_and_training_data(app_client, batch):
    "A correction is stored with its reviewer; the later of two reviewers gets a conflict; an undo removes it."
    batch_id, _ = batch
    feedback: FeedbackStore = app_client.app.state.feedback
    r = rows(app_client, batch_id)[5]
    wrong = (r["predicted_index"] + 1) % 10
    d = change(app_client, batch_id, idx=5, version=0, source="corrected", final_index=wrong)
    (saved,) = d["rows"]
    assert (saved["source"], saved["final_index"], saved["reviewer"], saved["version"]) == (
        "corrected",
        wrong,
        "Аня",
        1,
    )
    assert d["batch"]["counts"]["corrected"] >= 1 and not d["conflicts"]
    fb = feedback.rows(limit=1)[0]
    assert (fb["filename"], fb["chosen_index"], fb["reviewer"]) == (r["filename"], wrong, "Аня")

    late = change(app_client, batch_id, reviewer="Боря", idx=5, version=0, source="confirmed")
    assert late["rows"] == [] and late["conflicts"][0]["reviewer"] == "Аня"  # Боря saw version 0: refused
    assert rows(app_client, batch_id)[5]["final_index"] == wrong

    n = feedback.count()
    undone = change(app_client, batch_id, idx=5, version=1, source="model")["rows"][0]
    assert (undone["source"], undone["final_index"], undone["version"]) == ("model", r["predicted_index"], 2)
    assert feedback.count() == n - 1  # the undone correction is no training data

    same = change(
        app_client,
        batch_id,
        idx=6,
        version=0,
        source="corrected",
        final_index=rows(app_client, batch_id)[6]["predicted_index"],
    )
    assert same["rows"][0]["source"] == "confirmed"  # "correcting" to the model's own answer confirms it
    nap = change(app_client, batch_id, idx=7, version=0, source="not_a_product")["rows"][0]
    assert (nap["source"], nap["final"], nap["final_index"]) == ("not_a_product", None, None)
    assert feedback.count() == n - 1  # neither a confirmation nor "not a product" is a class label for training


def test_bad_changes_are_refused_clearly(app_client, batch):
    batch_id, _ = batch
    url = f"/ui/review/batches/{batch_id}/changes"
    r = app_client.post(url, json={"changes": [{"idx": 1, "version": 0, "source": "bogus"}]})
    assert r.status_code == 400 and "source must be one of" in r.json()["detail"]
    r = app_client.post(url, json={"changes": [{"idx": 1, "version": 0, "source": "corrected", "final_index": 10}]})
    assert r.status_code == 400 and "class number 0-9" in r.json()["detail"]
    r = app_client.post(url, json={"changes": [{"idx": 999, "version": 0, "source": "confirmed"}]})
    assert r.status_code == 400 and "no row 999" in r.json()["detail"]
    assert app_client.post(url, content=b"[1]", headers={"content-type": "application/json"}).status_code == 400
    assert app_client.get("/ui/review/batches/nope/rows").status_code == 404
    assert app_client.get(f"/ui/review/batches/{batch_id}/rows", params={"filter": "x"}).status_code == 400
    failed = change(app_client, batch_id, idx=40, version=0, source="confirmed")
    assert failed["rows"] == [] and failed["conflicts"][0]["source"] == "failed"  # a failed photo has no answer


def test_accept_rest_confirms_only_unreviewed_rows_of_the_filter(app_client, batch):
    batch_id, _ = batch
    before = {r["idx"]: r for r in rows(app_client, batch_id)}
    pending = [r["idx"] for r in rows(app_client, batch_id, "review") if r["source"] == "model"]
    r = app_client.post(f"/ui/review/batches/{batch_id}/accept", json={"filter": "review", "reviewer": "Аня"}).json()
    assert sorted(x["idx"] for x in r["rows"]) == pending and r["batch"]["pending"] == 0
    after = {r["idx"]: r for r in rows(app_client, batch_id)}
    for i, row in after.items():
        if i in pending:
            assert row["source"] == "confirmed" and row["final"] == row["predicted"]
        else:
            assert row["source"] == before[i]["source"]  # outside the filter or already reviewed: untouched


def test_exports_and_rest_api(app_client, batch, tmp_path):
    batch_id, names = batch
    assert app_client.get(f"/batches/{batch_id}").status_code == 401  # behind the API key, as /predict
    h = {"X-API-Key": "k1"}
    b = app_client.get(f"/batches/{batch_id}", headers=h).json()
    assert b["n_files"] == 42 and b["status"] == "ready" and len(b["rows"]) == 42
    assert app_client.get("/batches/nope", headers=h).status_code == 404
    r = app_client.get(f"/batches/{batch_id}/export", params={"format": "csv"}, headers=h)
    assert r.headers["content-disposition"] == f'attachment; filename="batch-{batch_id}.csv"'
    out = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert list(out[0]) == EXPORT_COLUMNS and [o["file"] for o in out] == [*names[:-1], "'=cmd.png"]
    engine = app_client.app.state.engine
    nap = out[7]
    assert (nap["source"], nap["category"], nap["category_ru"]) == ("not_a_product", "", "")
    ok = next(o for o in out if o["source"] == "confirmed")
    assert ok["category_ru"] == engine.classes_ru[engine.classes.index(ok["category"])] and ok["reviewer"] == "Аня"
    assert out[40]["source"] == "failed" and out[40]["error"] == "ошибка: not_an_image"
    x = app_client.get(f"/batches/{batch_id}/export", params={"format": "xlsx"}, headers=h)
    ws = load_workbook(io.BytesIO(x.content)).active
    table = [list(r) for r in ws.iter_rows(values_only=True)]
    assert table[0] == EXPORT_COLUMNS and [t[0] for t in table[1:]] == [o["file"] for o in out]
    assert isinstance(table[1][6], float) and table[1][6] == float(out[0]["confidence"])
    assert app_client.get(f"/batches/{batch_id}/export", params={"format": "pdf"}, headers=h).status_code == 422
    ui = app_client.get(f"/ui/review/batches/{batch_id}/export", params={"format": "csv"})  # the page's download
    assert ui.status_code == 200 and ui.content == r.content


def test_reviewer_from_the_trusted_header(app_client, batch):
    batch_id, _ = batch
    v = rows(app_client, batch_id)[8]["version"]
    r = app_client.post(f"/ui/review/batches/{batch_id}/changes", headers={"X-User": "petrova"},
                        json={"reviewer": "кто угодно", "changes": [{"idx": 8, "version": v, "source": "confirmed"}]})  # fmt: skip
    assert r.json()["rows"][0]["reviewer"] == "petrova"


def test_metrics_count_stored_corrections_and_the_audit(app_client, batch):
    "fashioncat_feedback_total counts the corrections in the store (an undone one is gone); the audit's error rate."
    batch_id, _ = batch
    audited = [r for r in rows(app_client, batch_id) if r["audit"]]
    a = audited[0]
    change(
        app_client,
        batch_id,
        idx=a["idx"],
        version=a["version"],
        source="corrected",
        final_index=(a["predicted_index"] + 1) % 10,
    )
    stored = app_client.app.state.feedback.rows()
    text = app_client.get("/metrics").text
    per = {}
    for r in stored:
        per[r["chosen"]] = per.get(r["chosen"], 0) + 1
    for category, n in per.items():
        assert f'fashioncat_feedback_total{{category="{category}"}} {float(n)}' in text
    audit = app_client.app.state.workflow.store.batch(batch_id)["audit"]
    assert audit["errors"] >= 1 and f"fashioncat_audit_errors {float(audit['errors'])}" in text
    assert f"fashioncat_audit_error_rate {audit['errors'] / audit['reviewed']}" in text


def test_store_survives_reopening_and_marks_interrupted_batches(tmp_path):
    s = BatchStore(tmp_path / "f.sqlite")
    b = s.create(3, "x", "v1", 0.02)
    s.add_rows(b, [{"idx": 0, "filename": "a", "source": "failed", "error": "empty"}])
    again = BatchStore(tmp_path / "f.sqlite")
    assert again.interrupted() == 1
    got = again.batch(b)
    assert (got["status"], got["error"], got["done"], got["counts"]["failed"]) == ("failed", "interrupted", 1, 1)
    import sqlite3

    with sqlite3.connect(tmp_path / "f.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_export_formats_defuse_formulas():
    rows = [{c: "" for c in EXPORT_COLUMNS} | {"file": "=HYPERLINK(1)", "reviewer": "+x", "confidence": 0.5}]
    assert b"'=HYPERLINK(1)" in to_csv(rows) and to_csv(rows).startswith("\ufeff".encode())
    ws = load_workbook(io.BytesIO(to_xlsx(rows))).active
    assert [c.value for c in ws[2]][:1] == ["'=HYPERLINK(1)"] and ws.cell(2, 7).value == 0.5


def test_corrections_carry_the_reviewer_and_old_files_gain_the_column(tmp_path):
    "A corrections file from before the reviewer column gains it; the CSV for training carries it."
    import sqlite3

    from app.ui.feedback import _SCHEMA, CSV_COLUMNS

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(_SCHEMA.replace(",\n    reviewer TEXT NOT NULL DEFAULT ''", ""))
        assert "reviewer" not in {r[1] for r in db.execute("PRAGMA table_info(feedback)")}
    store = FeedbackStore(path)
    view = np.zeros((28, 28), np.uint8)
    store.add(image=b"x", view=view, filename="a.jpg", predicted="Bag", confidence=0.5, chosen="Coat", chosen_index=4,
              model_version="v1", reviewer="Аня")  # fmt: skip
    out = list(csv.DictReader(io.StringIO(store.to_csv(tmp_path / "c.csv").read_text(encoding="utf-8-sig"))))
    assert "reviewer" in CSV_COLUMNS and (out[0]["reviewer"], out[0]["chosen_index"]) == ("Аня", "4")
    from fashioncat.data import read_feedback

    images, labels = read_feedback(tmp_path / "c.csv")  # what training reads
    assert images.shape == (1, 28, 28) and labels.tolist() == [4]


def test_ui_refuses_a_batch_over_the_limit(app_client, tmp_path):
    import gradio as gr

    for _ in range(600):  # the UI is built in the background after the model
        if getattr(app_client.app.state, "ui", None) is not None:
            break
        time.sleep(0.1)
    ui = app_client.app.state.ui
    with pytest.raises(gr.Error, match="не больше 2000"):
        ui.start_batch(["x.jpg"] * 2001, "", None)
    with pytest.raises(gr.Error, match="не был загружен"):
        ui.start_batch([str(tmp_path / "feedback.sqlite")], "", None)  # only uploads: never another file of the server
    assert ui.start_batch([], "", None) == ("", None)


def test_batches_on_an_api_only_replica_are_a_404_not_an_outage(model_path):
    "FASHIONCAT_UI_ENABLED=false: no batches are kept here, which a client is told with a 404 (a 5xx would page)."
    from app.core.config import Settings
    from app.main import create_app

    with TestClient(create_app(Settings(model_path=str(model_path), ui_enabled=False))) as c:
        r = c.get("/batches/anything")
        assert (r.status_code, r.json()["error"]) == (404, "no_batches")
