"""Settings fail closed: bounds on every FASHIONCAT_* value, one line naming the variable at start, no traceback; the
corrections store is the UI's (API-only replicas need no data folder); the UI's accounts."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.auth import LOCAL_REVIEWER, check_password, hash_password, parse_users, reviewer, ui_auth
from app.core.config import Settings, SettingsError, load_settings
from app.main import create_app

ROOT = Path(__file__).resolve().parents[2]
IMG = (ROOT / "app" / "examples" / "1_trouser.png").read_bytes()


def start(env: dict, tmp_path) -> subprocess.CompletedProcess:
    "Import app.main (what uvicorn does first) with `env` over a clean FASHIONCAT_* environment."
    base = {k: v for k, v in os.environ.items() if not k.startswith("FASHIONCAT_")}
    code = "import app.main"
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


@pytest.mark.parametrize(
    "var, value, says",
    [
        ("FASHIONCAT_THREADS", "9999", "per CPU"),
        ("FASHIONCAT_TOP_K", "0", "greater than or equal to 1"),
        ("FASHIONCAT_API_KEYS", ", ,", "blank"),
        ("FASHIONCAT_API_KEYS", "", "blank"),
        ("FASHIONCAT_DATA_DIR", "  ", "blank"),
        ("FASHIONCAT_MEMORY_BUDGET_MB", "1", "greater than or equal to 16"),
        ("FASHIONCAT_LOG_LEVEL", "LOUD", "DEBUG"),
        ("FASHIONCAT_MAX_BATCH", "100000", "less than or equal to 1024"),
    ],
)
def test_a_bad_value_stops_the_start_with_one_line_naming_the_variable(tmp_path, var, value, says):
    r = start({var: value, "FASHIONCAT_UI_ENABLED": "false"}, tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"fashioncat: invalid settings: {var}=") and says in lines[0], lines[0]


def test_the_ui_needs_an_explicit_data_folder_and_accounts(tmp_path):
    r = start({}, tmp_path)
    assert r.returncode == 2 and "FASHIONCAT_DATA_DIR" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = start({"FASHIONCAT_DATA_DIR": str(tmp_path)}, tmp_path)
    assert r.returncode == 2 and "FASHIONCAT_UI_USERS" in r.stderr, r.stderr
    users = tmp_path / "users"
    users.write_text("anna:" + "x" * 10)
    r = start({"FASHIONCAT_DATA_DIR": str(tmp_path), "FASHIONCAT_UI_USERS": str(users)}, tmp_path)
    assert r.returncode == 2 and "line 1" in r.stderr, r.stderr
    users.write_text("# reviewers\nanna:" + hash_password("correct horse") + "\n")
    assert start({"FASHIONCAT_DATA_DIR": str(tmp_path), "FASHIONCAT_UI_USERS": str(users)}, tmp_path).returncode == 0
    assert start({"FASHIONCAT_DATA_DIR": str(tmp_path), "FASHIONCAT_UI_AUTH": "off"}, tmp_path).returncode == 0
    assert start({"FASHIONCAT_UI_ENABLED": "false"}, tmp_path).returncode == 0  # API only: no folder, no accounts


def test_load_settings_names_every_bad_variable():
    with pytest.raises(SettingsError) as e:
        load_settings(top_k=99, threads=-1)
    assert "FASHIONCAT_TOP_K=99" in str(e.value) and "FASHIONCAT_THREADS=-1" in str(e.value)
    assert Settings(api_keys=" k1 , ,k2").api_key_set == {"k1", "k2"} and Settings().api_key_set == set()


def test_passwords_and_the_reviewer():
    users = parse_users("anna:" + hash_password("pw-anna-1") + "\nboris:sha256:" + "0" * 64)
    assert check_password(users["anna"], "pw-anna-1") and not check_password(users["anna"], "pw-anna-2")
    import hashlib

    sha = "sha256:" + hashlib.sha256(b"pw-boris").hexdigest()
    assert check_password(sha, "pw-boris") and not check_password(sha, "pw-borisx")
    with pytest.raises(SettingsError, match="line 2"):
        parse_users("anna:" + hash_password("x") + "\nboris:plaintext")
    with pytest.raises(SettingsError, match="no accounts"):
        parse_users("# nobody\n")

    class Req:
        username = "anna"

    assert reviewer(Req()) == "anna" and reviewer(object()) == LOCAL_REVIEWER
    assert ui_auth(Settings(ui_auth="off")) is None


def test_ui_login_from_the_users_file(tmp_path):
    f = tmp_path / "users"
    f.write_text("anna:" + hash_password("pw-anna-1") + "\n")
    login = ui_auth(Settings(ui_users=str(f), ui_auth="on"))
    assert login("anna", "pw-anna-1") is True
    assert login("anna", "wrong") is False and login("nobody", "pw-anna-1") is False


def _ui_app(model_path, data_dir):
    return create_app(Settings(model_path=str(model_path), data_dir=str(data_dir), ui_auth="off"))


@pytest.mark.parametrize("damage", ["corrupt", "wrong_schema", "not_a_folder"])
def test_a_broken_store_is_reported_and_the_api_serves(model_path, tmp_path, monkeypatch, damage):
    monkeypatch.setattr("app.main.start_ui", _never)  # the UI itself is not needed to see the store's state
    data = tmp_path / "data"
    if damage == "not_a_folder":
        data.write_text("a file where the folder should be")
    else:
        data.mkdir()
        if damage == "corrupt":
            (data / "feedback.sqlite").write_bytes(b"not a database " * 500)
        else:
            with sqlite3.connect(data / "feedback.sqlite") as db:
                db.execute("CREATE TABLE feedback (id INTEGER, something TEXT)")
    with TestClient(_ui_app(model_path, data)) as c:
        r = c.get("/ready")
        assert r.status_code == 200 and r.json()["ui"] == "failed", r.json()
        assert "sqlite" in r.json()["store"] or "feedback" in r.json()["store"]
        ui = c.get("/ui/", headers={"accept": "text/html"})
        assert ui.status_code == 503 and "Интерфейс не запустился" in ui.text
        assert c.post("/predict", files={"file": ("a.png", IMG, "image/png")}).status_code == 200


def test_a_good_store_is_ok_on_ready(model_path, tmp_path, monkeypatch):
    monkeypatch.setattr("app.main.start_ui", _never)
    with TestClient(_ui_app(model_path, tmp_path / "data")) as c:
        assert c.get("/ready").json()["store"] == "ok"


def test_api_only_replicas_need_no_data_folder(model_path, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("x")  # a data folder that cannot exist: an API-only replica must not care
    app = create_app(Settings(model_path=str(model_path), data_dir=str(blocked / "sub"), ui_enabled=False))
    with TestClient(app) as c:
        assert c.get("/ready").json() == {"ready": True, "model_version": c.get("/model").json()["version"], "ui": "disabled"}  # fmt: skip
        assert c.post("/predict", files={"file": ("a.png", IMG, "image/png")}).status_code == 200
    assert not (tmp_path / "file").is_dir()


async def _never(app, stack):
    return None


@pytest.mark.parametrize("var, value", [("FASHIONCAT_HEADER_TIMEOUT_S", "0"), ("FASHIONCAT_MAX_HEADER_BYTES", "lots")])
def test_the_edge_limits_fail_closed_too(var, value):
    "uvicorn imports app.core.edge before the app: its two variables are checked there, with the same one line."
    base = {k: v for k, v in os.environ.items() if not k.startswith("FASHIONCAT_")}
    r = subprocess.run([sys.executable, "-c", "import app.core.edge"], env={**base, var: value}, cwd=ROOT,
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
    assert r.stderr.startswith(f"fashioncat: invalid settings: {var}=")
