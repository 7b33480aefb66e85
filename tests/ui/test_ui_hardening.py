"""The UI's housekeeping: uploads aged out by Gradio's cache cleaner after FASHIONCAT_UPLOAD_MAX_AGE_S, one CSV export
file replaced by each export (none pile up), and Gradio's login wired in when accounts are configured."""

import time

from fastapi.testclient import TestClient

from app.core.auth import hash_password
from app.core.config import Settings
from app.main import create_app


def wait_ui(c, timeout=90):
    deadline = time.monotonic() + timeout
    while (body := c.get("/ready").json())["ui"] == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
    return body


def test_uploads_age_out_exports_do_not_pile_up_and_login_is_on(model_path, tmp_path):
    users = tmp_path / "users"
    users.write_text("anna:" + hash_password("pw-anna-123") + "\n")
    s = Settings(model_path=str(model_path), data_dir=str(tmp_path / "data"), ui_auth="on", ui_users=str(users),
                 upload_max_age_s=120)  # fmt: skip
    with TestClient(create_app(s)) as c:
        assert wait_ui(c)["ui"] == "ready"
        ui = c.app.state.ui
        assert ui.blocks.delete_cache == (120, 120)  # every 120 s, files older than 120 s
        assert c.get("/ui/config").status_code == 401  # Gradio's login guards the UI's routes
        first, second = ui.export_csv(), ui.export_csv()
        assert first == second and sorted(p.name for p in (tmp_path / "data" / "exports").iterdir()) == ["feedback.csv"]


def test_review_queue_routes_need_the_ui_login(model_path, tmp_path):
    "The queue's JSON routes live outside Gradio: without the login's cookie they are refused, with it they answer."
    users = tmp_path / "users"
    users.write_text("anna:" + hash_password("pw-anna-123") + "\n")
    s = Settings(model_path=str(model_path), data_dir=str(tmp_path / "data"), ui_auth="on", ui_users=str(users))
    with TestClient(create_app(s)) as c:
        assert wait_ui(c)["ui"] == "ready"
        r = c.get("/ui/review/batches")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert c.post("/ui/login", data={"username": "anna", "password": "wrong"}).status_code == 400
        assert c.post("/ui/login", data={"username": "anna", "password": "pw-anna-123"}).status_code == 200
        assert c.get("/ui/review/batches").status_code == 200  # the cookie Gradio set now names anna
        req = type("R", (), {"app": c.app, "cookies": dict(c.cookies)})()
        from app.core.auth import ui_user

        assert ui_user(req) == "anna"
