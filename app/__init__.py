"""fashioncat's service: the FastAPI app (`app.main`), its routers and the merchandisers' Gradio UI (`app.ui`)."""
