"""The API's routers: `predict` (categorisation) and `system` (health, readiness, model, metrics)."""
