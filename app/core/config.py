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
    data_dir: str = "feedback"  # where the UI's corrections and batches are stored (feedback.sqlite)
    audit_share: float = Field(0.02, ge=0, le=1)  # share of confident answers put in the review queue for audit
    reviewer_header: str = ""  # a trusted proxy's header naming the signed-in reviewer (e.g. X-Forwarded-User)
    batch_max_files: int = Field(2000, ge=1)  # most photos in one upload of the review UI
    log_level: str = "INFO"

    @property
    def api_key_set(self) -> set[str]:
        "The configured API keys; empty when keys are off."
        return {k.strip() for k in self.api_keys.split(",") if k.strip()}
