"""The service's settings: the engine's (`fashioncat.serving.Settings`) and the app's own, one class per process, read
from `FASHIONCAT_*` environment variables. They fail closed: a value out of bounds, a blank key list or a blank folder
stops the process at start with one line naming the variable (`load_settings`)."""

from typing import Literal

from pydantic import Field, ValidationError, field_validator

from fashioncat.serving import Settings as EngineSettings

_BLANK_OK = ("ui_users",)  # empty means "not used" for these; for the others, set means set


class SettingsError(ValueError):
    "A `FASHIONCAT_*` value the service refuses to start with; the message names the variable."


class Settings(EngineSettings):
    "Everything the API and the UI read from `FASHIONCAT_*` variables, with defaults that serve out of the box."

    max_batch: int = Field(64, ge=1, le=1024)  # most images in one batch request
    max_batch_bytes: int = Field(64 * 2**20, ge=1, le=2**30)  # largest batch request body
    api_keys: str | None = None  # comma-separated keys; unset: /predict* needs none (set but blank: an error)
    ui_enabled: bool = True  # mount the merchandisers' UI on /ui (behind its own login: ui_users or ui_user_header)
    data_dir: str | None = (
        None  # where the UI's corrections and batches are stored (feedback.sqlite); required with the UI
    )
    audit_share: float = Field(0.02, ge=0, le=1)  # share of confident answers put in the review queue for audit
    reviewer_header: str = ""  # a trusted proxy's header naming the signed-in reviewer (e.g. X-Forwarded-User)
    batch_max_files: int = Field(2000, ge=1, le=100_000)  # most photos in one upload of the review UI
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    memory_budget_mb: int = Field(340, ge=16, le=1_048_576)  # MB that bodies and decodes may hold at once
    admission_wait_s: float = Field(2.0, ge=0, le=60)  # how long a request waits for the budget before a 503
    ui_auth: Literal["on", "off"] = "on"  # "off": no login on /ui (only for a UI on 127.0.0.1)
    ui_users: str = ""  # a file of `user:hash` lines (bcrypt `$2b$...` or `sha256:<hex>`), the UI's accounts
    upload_max_age_s: int = Field(3600, ge=60, le=7 * 86400)  # the UI's uploads are deleted after this long
    # Model updates (app/core/models.py, app/core/shadow.py, docs/serving.md "Model updates")
    models_dir: str | None = None  # folder of versions/ and current (fashioncat.versions); unset: the model's folder
    admin_keys: str | None = None  # comma-separated keys for /admin/*; unset: the admin API answers 404
    model_poll_s: float = Field(0.0, ge=0, le=3600)  # how often each worker checks `current`; 0: never
    shadow_version: str | None = None  # a version that runs in shadow on a share of the live traffic; unset: none
    shadow_share: float = Field(0.1, ge=0, le=1)  # share of /predict requests the shadow version also sees
    shadow_queue: int = Field(64, ge=1, le=10_000)  # requests waiting for the shadow model; more are dropped

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v):
        return v.upper() if isinstance(v, str) else v

    @field_validator("api_keys", "data_dir", "ui_users", "models_dir", "admin_keys", "shadow_version")
    @classmethod
    def _not_blank(cls, v: str | None, info) -> str | None:
        "A value that is set must say something: `FASHIONCAT_API_KEYS=', ,'` must not turn the keys off."
        if v is None or (info.field_name in _BLANK_OK and v == ""):
            return v
        if not [p for p in v.split(",") if p.strip()]:
            raise ValueError("is set but blank; give a value, or leave the variable unset")
        return v.strip() if info.field_name not in ("api_keys", "admin_keys") else v

    @property
    def api_key_set(self) -> set[str]:
        "The configured API keys; empty when keys are off."
        return {k.strip() for k in (self.api_keys or "").split(",") if k.strip()}

    @property
    def admin_key_set(self) -> set[str]:
        "The configured admin keys; empty when the admin API is off."
        return {k.strip() for k in (self.admin_keys or "").split(",") if k.strip()}


def _env_name(loc: tuple) -> str:
    return "FASHIONCAT_" + str(loc[0]).upper() if loc else "FASHIONCAT_*"


def describe(e: ValidationError) -> str:
    "One line for every refused value: `FASHIONCAT_TOP_K=0: Input should be greater than or equal to 1`."
    parts = []
    for err in e.errors():
        given = err.get("input")
        shown = "" if isinstance(given, dict) else f"={given!r}"
        parts.append(f"{_env_name(err.get('loc', ()))}{shown}: {err.get('msg', '').removeprefix('Value error, ')}")
    return "; ".join(parts)


def load_settings(**overrides) -> Settings:
    "The settings from the environment (and `overrides`), or a `SettingsError` naming each bad variable."
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise SettingsError(describe(e)) from None
