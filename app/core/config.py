"""The service's settings: the engine's (`fashioncat.serving.Settings`) and the app's own, one class per process, read
from `FASHIONCAT_*` environment variables."""

from pydantic import Field

from fashioncat.serving import Settings as EngineSettings


class Settings(EngineSettings):
    "Everything the API and the UI read from `FASHIONCAT_*` variables, with defaults that serve out of the box."

    max_batch: int = Field(64, ge=1)  # most images in one batch request
    max_batch_bytes: int = Field(64 * 2**20, ge=1)  # largest batch request body
    api_keys: str = ""  # comma-separated keys; empty: /predict* needs none
    ui_enabled: bool = True  # mount the merchandisers' UI on /ui (the API keys do not cover it)
    data_dir: str = "feedback"  # where the UI's corrections are stored (feedback.sqlite)
    log_level: str = "INFO"
    # Model updates (app/core/models.py, app/core/shadow.py, docs/serving.md "Model updates")
    models_dir: str = ""  # folder of versions/ and current (fashioncat.versions); empty: the default model's folder
    admin_keys: str = ""  # comma-separated keys for /admin/*; empty: the admin API answers 404
    model_poll_s: float = Field(0.0, ge=0)  # each worker checks `current` this often, swaps when it changes; 0: off
    shadow_version: str = ""  # a version that runs in shadow on a share of the live traffic; empty: none
    shadow_share: float = Field(0.1, ge=0, le=1)  # share of /predict requests the shadow version also sees
    shadow_queue: int = Field(64, ge=1)  # requests waiting for the shadow model; more are dropped, never waited for

    @property
    def api_key_set(self) -> set[str]:
        "The configured API keys; empty when keys are off."
        return {k.strip() for k in self.api_keys.split(",") if k.strip()}

    @property
    def admin_key_set(self) -> set[str]:
        "The configured admin keys; empty when the admin API is off."
        return {k.strip() for k in self.admin_keys.split(",") if k.strip()}
