"""The merchandisers' UI (Gradio, Russian), mounted on /ui of the API app and sharing its engine and feedback store.

Upload one photo or many; each gets the photo, the 28x28 view the model saw, the top 3 with bars and a visible
"needs review" mark. A wrong answer is corrected with one click on the right category; corrections are listed, and
downloadable as CSV, on the second tab. `categorise` and `correct` are also API endpoints (gradio_client).
"""

import time
import uuid
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import numpy as np
from fastapi import FastAPI
from gradio.utils import get_upload_folder
from starlette.routing import Mount

from fashioncat.serving import Engine, Settings, too_large

from .feedback import FeedbackStore
from .service import categorise as run_categorise

EXAMPLES_DIR = Path(__file__).parent / "examples"
_RECENT_MAX = 1000  # results kept for one-click correction (id -> upload path, view, answer)
# Gradio's queue polls for work every 1 ms when it has none, on the API's event loop: 3.8% of a core here with nobody
# on the UI (0.6% at 20 ms), and wake-ups between every API request. 20 ms (progress: 100 ms) is unnoticeable to a person clicking.
QUEUE_POLL_S, PROGRESS_POLL_S = 0.02, 0.1

_CSS = """
.fc-review {color: #b45309; font-weight: 600}
.fc-ok {color: #15803d; font-weight: 600}
"""


def _label(engine: Engine, i: int) -> str:
    return f"{engine.classes_ru[i]} ({engine.classes[i]})"


class UI:
    "The UI's functions, bound to the app whose lifespan provides the engine and the feedback store."

    def __init__(self, app: FastAPI):
        self.app = app
        self.recent: OrderedDict[str, dict] = OrderedDict()
        self.blocks: gr.Blocks | None = None  # set by `gradio_app`

    @property
    def engine(self) -> Engine:
        return self.app.state.engine

    @property
    def store(self) -> FeedbackStore:
        return self.app.state.feedback

    def categorise(self, files: list[str] | None) -> tuple[list[dict], str, list[dict]]:
        "Categorise uploaded files: (items for display, a summary line, the results as JSON)."
        files = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]
        if not files:
            return [], "Загрузите одно или несколько фото товаров.", []
        s: Settings = self.app.state.settings
        if len(files) > s.max_batch:
            raise gr.Error(f"Слишком много фото за один раз: {len(files)}. Загрузите не больше {s.max_batch}.")
        roots = [Path(get_upload_folder()).resolve(), EXAMPLES_DIR.resolve()]
        for f in files:  # only what was uploaded (or an example): never another file of the server
            if not any(Path(f).resolve().is_relative_to(root) for root in roots):
                raise gr.Error(f"Файл {Path(f).name!r} не был загружен: загрузите фото через форму.")
        items = [(Path(f).name, _read(Path(f), s.max_bytes)) for f in files]
        results = run_categorise(self.engine, self.app.state.metrics, items)
        shown, public = [], []
        for f, r in zip(files, results):
            item_id = uuid.uuid4().hex[:12]
            if "error" not in r:
                self.recent[item_id] = {"path": f, "view": r["view"], "filename": r["filename"], "predicted": r["category"], "confidence": r["confidence"]}  # fmt: skip
                while len(self.recent) > _RECENT_MAX:
                    self.recent.popitem(last=False)
            shown.append({"id": item_id, "path": f, **r})
            public.append({"id": item_id, **{k: v for k, v in r.items() if k != "view"}})
        n_review = sum(bool(r.get("needs_review")) for r in results)
        n_err = sum("error" in r for r in results)
        summary = f"Обработано фото: {len(results)}. Требуют проверки: {n_review}." + (
            f" Ошибок: {n_err}." if n_err else ""
        )
        return shown, summary, public

    def correct(self, item_id: str, category: str) -> str:
        "Store a correction: `category` is an English name, a Russian one or the UI's 'Русское (English)' label."
        engine = self.engine
        labels = {name: i for i, name in enumerate(engine.classes)}
        labels |= {name: i for i, name in enumerate(engine.classes_ru)}
        labels |= {_label(engine, i): i for i in range(len(engine.classes))}
        if category not in labels:
            raise gr.Error(f"Неизвестная категория: {category!r}")
        item = self.recent.get(item_id)
        if item is None:
            raise gr.Error("Этот результат устарел: загрузите фото заново.")
        i = labels[category]
        self.store.add(
            image=Path(item["path"]).read_bytes(),
            view=item["view"],
            filename=item["filename"],
            predicted=item["predicted"],
            confidence=item["confidence"],
            chosen=engine.classes[i],
            chosen_index=i,
            model_version=engine.info.version,
        )
        self.app.state.metrics.feedback.labels(engine.classes[i]).inc()
        return f"Сохранено: {_label(engine, i)} (модель: {item['predicted']})."

    def table(self) -> list[list]:
        "The latest corrections, newest first."
        rows = self.store.rows(limit=200)
        return [[r["created_at"], r["filename"], r["predicted"], round(r["confidence"], 3), r["chosen"]] for r in rows]

    def export_csv(self) -> str:
        "Every correction as CSV; the path of the file."
        out = Path(self.app.state.settings.data_dir) / "exports" / f"feedback-{time.strftime('%Y%m%d-%H%M%S')}.csv"
        return str(self.store.to_csv(out))


def _read(path: Path, max_bytes: int) -> bytes | Exception:
    "The file's bytes, or the error for a file over `max_bytes` (not read)."
    n = path.stat().st_size
    return too_large(n, max_bytes) if n > max_bytes else path.read_bytes()


def _review_md(r: dict, engine: Engine) -> str:
    pct, thr = r["confidence"] * 100, engine.review_threshold * 100
    if r["needs_review"]:
        return f"<span class='fc-review'>⚠ Требует проверки</span>: уверенность {pct:.0f}% ниже порога {thr:.0f}%"
    return f"<span class='fc-ok'>✓ Уверенно</span>: {pct:.0f}% (порог {thr:.0f}%)"


def build_ui(ui: UI) -> gr.Blocks:
    "The Blocks of the UI."
    examples = sorted(str(p) for p in EXAMPLES_DIR.glob("*.png"))
    with gr.Blocks(title="fashioncat — категории товаров") as demo:
        gr.Markdown(
            "# Категоризация товаров по фото\n"
            "Загрузите фото товаров (PNG, JPEG, WebP, BMP, GIF, TIFF; можно сразу несколько). Для каждого фото — "
            "что увидела модель (28×28), три самые вероятные категории и отметка, если ответ нужно проверить. "
            "Если категория неверна, выберите правильную — исправление сохранится одним щелчком."
        )
        with gr.Tab("Распознавание"):
            with gr.Row():
                files = gr.File(file_count="multiple", file_types=["image"], label="Фото товаров", height=160)
            btn = gr.Button("Определить категории", variant="primary")
            gallery = gr.Gallery(
                [(p, Path(p).stem.split("_", 1)[1]) for p in examples],
                label="Примеры из тестового набора: щёлкните, чтобы распознать",
                columns=10,
                height=150,
                allow_preview=False,
                visible=bool(examples),
            )
            summary = gr.Markdown()
            items = gr.State([])
            with gr.Accordion("Ответ в формате JSON (как у REST API)", open=False):
                as_json = gr.JSON(label="Результаты")
            btn.click(ui.categorise, inputs=[files], outputs=[items, summary, as_json], api_name="categorise")

            def pick(evt: gr.SelectData) -> list[str]:
                return [examples[evt.index]]

            gallery.select(pick, outputs=[files], api_visibility="private").then(
                ui.categorise, inputs=[files], outputs=[items, summary, as_json], api_visibility="private"
            )

            @gr.render(inputs=[items])
            def show(shown: list[dict]):
                engine = ui.engine
                choices = [_label(engine, i) for i in range(len(engine.classes))]
                for r in shown:
                    with gr.Row(equal_height=False):
                        gr.Image(r["path"], label=r.get("filename") or "фото", height=180, scale=1, buttons=[])
                        if "error" in r:
                            gr.Markdown(f"**Ошибка ({r['status']}):** {r['detail']}")
                            continue
                        view = np.kron(r["view"], np.ones((6, 6), np.uint8))
                        gr.Image(
                            view,
                            label="Что видит модель (28×28)",
                            image_mode="L",
                            format="png",
                            height=180,
                            scale=1,
                            buttons=[],
                        )
                        top = {
                            _label(engine, engine.classes.index(t["category"])): t["probability"] for t in r["top_k"]
                        }
                        gr.Label(top, num_top_classes=3, label="Топ-3", scale=2)
                        with gr.Column(scale=2):
                            gr.Markdown(_review_md(r, engine))
                            fix = gr.Radio(choices, value=None, label="Неверно? Выберите правильную категорию")
                            status = gr.Markdown()
                            fix.input(lambda c, item_id=r["id"]: ui.correct(item_id, c), inputs=[fix], outputs=[status])

            fb_id, fb_cat = gr.Textbox(visible=False), gr.Textbox(visible=False)
            fb_out = gr.Textbox(visible=False)
            gr.Button(visible=False).click(ui.correct, inputs=[fb_id, fb_cat], outputs=[fb_out], api_name="correct")
        with gr.Tab("Исправления"):
            gr.Markdown(
                "Исправления, сделанные на первой вкладке: фото, ответ модели, выбранная категория и время. "
                "CSV содержит и сами изображения 28×28 (столбец `pixels`) — так исправления попадают в следующее обучение."
            )
            refresh = gr.Button("Обновить")
            table = gr.Dataframe(
                headers=["Время (UTC)", "Файл", "Модель", "Уверенность", "Исправлено на"], interactive=False
            )
            download = gr.Button("Скачать CSV")
            csv_file = gr.File(label="CSV с исправлениями")
            refresh.click(ui.table, outputs=[table], api_name="feedback_table")
            download.click(ui.export_csv, outputs=[csv_file], api_name="feedback_csv")
        demo.load(ui.table, outputs=[table], api_visibility="private")
    return demo


def calm_queue(blocks: gr.Blocks) -> None:
    "Slow the idle polling of the Gradio queue to `QUEUE_POLL_S` (gradio's private attributes: skipped if renamed)."
    q = getattr(blocks, "_queue", None)
    if q is None or not hasattr(q, "sleep_when_free"):
        return
    q.sleep_when_free = max(q.sleep_when_free, QUEUE_POLL_S)
    if hasattr(q, "progress_update_sleep_when_free"):
        q.progress_update_sleep_when_free = max(q.progress_update_sleep_when_free, PROGRESS_POLL_S)


def gradio_app(app: FastAPI, path: str = "/ui"):
    """The UI as the Gradio sub-app to serve on `app` at `path`, and the lifespan that starts it (its queue included).

    Exactly what `gr.mount_gradio_app(app, ...)` would add to `app`, collected on a bare carrier app instead, so it can
    be built after `app` has started (`app.ui_mount.start_ui` serves it on `path` and enters the lifespan)."""
    ui = UI(app)
    s: Settings = app.state.settings
    carrier = FastAPI()
    carrier.user_middleware = app.user_middleware  # gradio's CORS middleware defers to the real parent's, if any
    blocks = build_ui(ui)
    gr.mount_gradio_app(
        carrier,
        blocks,
        path=path,
        ssr_mode=False,
        # the examples, and the CSV exports the "Скачать CSV" button hands out (wherever FASHIONCAT_DATA_DIR is)
        allowed_paths=[str(EXAMPLES_DIR), str((Path(s.data_dir) / "exports").resolve())],
        max_file_size=s.max_bytes,  # uploads over it are refused by gradio's /upload with 413
        footer_links=["api"],
        css=_CSS,
    )
    # `launch()` sets this; mounting does not, and without it gradio skips its check that a function's input files
    # were uploaded (processing_utils._check_allowed): any path a client names would be copied into the cache,
    # categorised and served back. With it, inputs must be in the upload folder, outputs in `allowed_paths`.
    blocks.has_launched = True
    calm_queue(blocks)
    ui.blocks = blocks
    sub = next(r.app for r in carrier.routes if isinstance(r, Mount) and r.path == path)
    app.state.ui = ui
    return sub, carrier.router.lifespan_context(carrier)
