"""Response bodies, for the OpenAPI docs at /docs and for validation of what the API promises."""

from pydantic import BaseModel, Field


class TopK(BaseModel):
    category: str = Field(examples=["Trouser"])
    category_ru: str = Field(examples=["Брюки"])
    probability: float


class ImageInfo(BaseModel):
    bytes: int
    width: int
    height: int


class Prediction(BaseModel):
    category: str = Field(description="winning category, English name", examples=["Trouser"])
    category_ru: str = Field(description="winning category, Russian display name", examples=["Брюки"])
    class_index: int = Field(description="class index, as in Fashion-MNIST labels")
    confidence: float = Field(description="calibrated probability of the winning category")
    needs_review: bool = Field(
        description="confidence below the review threshold, or not a product: a person should check it"
    )
    is_product: bool | None = Field(
        None,
        description="a product photo (false: a banner, chart, logo, empty frame...); null if the model has no such calibration",
    )
    product_score: float | None = Field(
        None, description="how much the image looks like a product photo, 0-1 (0.5 at the threshold)"
    )
    top_k: list[TopK]
    filename: str | None = None
    image: ImageInfo | None = None


class PredictResponse(Prediction):
    model_version: str
    request_id: str


class BatchItem(BaseModel):
    "A prediction, or an error for this item alone (`error`, `status`, `detail`)."

    index: int = Field(description="position of the image in the request")
    filename: str | None = None
    category: str | None = None
    class_index: int | None = None
    category_ru: str | None = None
    confidence: float | None = None
    needs_review: bool | None = None
    is_product: bool | None = None
    product_score: float | None = None
    top_k: list[TopK] | None = None
    image: ImageInfo | None = None
    error: str | None = None
    status: int | None = None
    detail: str | None = None


class BatchResponse(BaseModel):
    model_version: str
    request_id: str
    count: int
    errors: int
    results: list[BatchItem]


class ErrorResponse(BaseModel):
    error: str = Field(examples=["unsupported_format"])
    detail: str | list = Field(
        examples=["HEIC/AVIF images are not accepted; convert to PNG, JPEG, WebP, BMP, GIF or TIFF"]
    )
    request_id: str
