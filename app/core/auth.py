"""Who may use the merchandisers' UI: accounts from `FASHIONCAT_UI_USERS`, a file of `user:hash` lines, checked by
Gradio's own login (its API routes, uploads and files included). Without accounts the UI does not start, unless
`FASHIONCAT_UI_AUTH=off` says so explicitly (`make serve` on 127.0.0.1 does).

A hash is bcrypt (`$2b$...`) or `sha256:<hex>`; `python -m app.core.auth NAME` prints a line for a new account (the
password read from the terminal). The UI's handlers get the signed-in name as `reviewer(request)`.
"""

import getpass
import hashlib
import hmac
import sys
from pathlib import Path

import bcrypt
from starlette.requests import Request

from .config import Settings, SettingsError
from .errors import RequestError

LOCAL_REVIEWER = "local"  # the reviewer's name when the UI runs without login (FASHIONCAT_UI_AUTH=off)


def parse_users(text: str, source: str = "FASHIONCAT_UI_USERS") -> dict[str, str]:
    "The accounts of a users file: {name: hash}; blank lines and `#` comments are skipped, a malformed line is an error."
    users = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        name, hashed = name.strip(), hashed.strip()
        ok = hashed.startswith(("$2a$", "$2b$", "$2y$")) or (
            hashed.startswith("sha256:") and len(hashed) == 71 and all(c in "0123456789abcdef" for c in hashed[7:])
        )
        if not sep or not name or not ok:
            raise SettingsError(f"{source}: line {n} is not `user:<bcrypt hash>` or `user:sha256:<64 hex digits>`")
        users[name] = hashed
    if not users:
        raise SettingsError(f"{source}: the file lists no accounts")
    return users


def read_users(path: str) -> dict[str, str]:
    "The accounts in the file at `path` (`FASHIONCAT_UI_USERS`)."
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(f"FASHIONCAT_UI_USERS={path!r}: cannot read the accounts file ({e})") from None
    return parse_users(text, f"FASHIONCAT_UI_USERS={path!r}")


def hash_password(password: str) -> str:
    "A bcrypt hash of `password`, for a users file."
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def check_password(hashed: str, password: str) -> bool:
    "Whether `password` matches the stored `hashed` (bcrypt, or `sha256:<hex>` compared in constant time)."
    given = password.encode("utf-8", "surrogatepass")
    if hashed.startswith("sha256:"):
        return hmac.compare_digest(hashlib.sha256(given).hexdigest(), hashed[7:])
    try:
        return bcrypt.checkpw(given[:72], hashed.encode())
    except ValueError:
        return False


def ui_auth(s: Settings):
    "Gradio's `auth` for the UI: a function (user, password) -> bool, or None with `FASHIONCAT_UI_AUTH=off`."
    if s.ui_auth == "off":
        return None
    users = read_users(s.ui_users)

    def login(user: str, password: str) -> bool:
        hashed = users.get(user)
        return hashed is not None and check_password(hashed, password)

    return login


def check_ui_settings(s: Settings) -> None:
    "The UI's settings, checked before the process serves: a data folder, and accounts unless auth is off."
    if not s.data_dir:
        raise SettingsError(
            "FASHIONCAT_DATA_DIR: the UI stores corrections there and it is unset; name a folder "
            "(make serve uses ./feedback), or set FASHIONCAT_UI_ENABLED=false for an API-only replica"
        )
    if s.ui_auth == "on" and not s.ui_users:
        raise SettingsError(
            "FASHIONCAT_UI_USERS: the UI needs accounts (a file of user:hash lines; `python -m app.core.auth NAME` "
            "prints one); or FASHIONCAT_UI_AUTH=off for a UI on 127.0.0.1 only, or FASHIONCAT_UI_ENABLED=false"
        )
    if s.ui_auth == "on":
        read_users(s.ui_users)


def ui_user(request) -> str | None:
    "The name signed in to the UI's login, for a plain request of the same browser (the review queue's routes)."
    gradio_app = getattr(getattr(request.app.state, "ui_mount", None), "app", None)
    tokens = getattr(gradio_app, "tokens", None)
    if tokens is None:  # the UI is not up yet
        return None
    cid = gradio_app.cookie_id  # Gradio's own cookie names (gradio.routes.App.get_current_user)
    return tokens.get(request.cookies.get(f"access-token-{cid}") or request.cookies.get(f"access-token-unsecure-{cid}"))


def require_ui_user(request: Request) -> None:
    "A dependency for routes the UI's page calls outside Gradio: with the login on, they need a signed-in browser."
    if request.app.state.settings.ui_auth == "on" and ui_user(request) is None:
        raise RequestError("sign in to the UI first (/ui)", 401, "unauthorized")


def reviewer(request) -> str:
    "Who is using the UI: the signed-in name (a Gradio handler's `gr.Request`, or a plain request), else `LOCAL_REVIEWER`."
    name = getattr(request, "username", None)
    if name is None and isinstance(request, Request):
        name = ui_user(request)
    return name or LOCAL_REVIEWER


if __name__ == "__main__":  # python -m app.core.auth NAME: a users-file line for NAME
    if len(sys.argv) != 2 or ":" in sys.argv[1]:
        sys.exit("usage: python -m app.core.auth NAME   (prints NAME:<bcrypt hash> for FASHIONCAT_UI_USERS)")
    pw = getpass.getpass(f"password for {sys.argv[1]}: ")
    if len(pw) < 8:
        sys.exit("the password must have at least 8 characters")
    print(f"{sys.argv[1]}:{hash_password(pw)}")
