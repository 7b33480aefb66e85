"""The merchandisers' UI (Gradio, Russian), mounted on /ui of the API app and sharing its engine and feedback store.

"Проверка партий": an upload becomes a stored batch (app/ui/workflow.py), processed in the background and reviewed in
a keyboard-driven queue drawn by the page's own script (app/ui/queue.js, over the JSON routes of app/ui/queue_routes.py).
"Отдельные фото": upload one photo or many; each gets the photo, the 28x28 view the model saw, the top 3 with bars and
a visible "needs review" mark, failed and doubtful photos first. A wrong answer is corrected with one click on the
right category (the row's data is kept in the user's session); corrections are listed, and downloadable as CSV, on
"Исправления". `categorise` and `correct` are also API endpoints (gradio_client); `correct` finds a result by id in a
cache.
"""

import functools
import hashlib
import re
import uuid
from collections import OrderedDict
from datetime import datetime
from pathlib import Path

import gradio as gr
import numpy as np
from fastapi import FastAPI
from gradio.utils import get_upload_folder
from starlette.routing import Mount

from fashioncat.photos import too_large
from fashioncat.serving import Engine

from ..core.auth import ui_auth
from ..core.config import Settings
from ..core.logs import app_log
from ..core.service import categorise as run_categorise
from .feedback import FeedbackStore
from .workflow import reviewer_of

EXAMPLES_DIR = Path(__file__).parents[1] / "examples"
# results kept for the API's `correct` (id -> upload path, view, answer); the UI's rows keep their own, in the session
_RECENT_MAX = 1000
_NAMED_MAX = 10  # files named in the summary, then "и ещё N"
_STALE = "Этот результат устарел: загрузите фото заново."  # a correction of a result no longer at hand
# Gradio's queue polls for work every 1 ms when it has none, on the API's event loop: 3.8% of a core here with nobody
# on the UI (0.6% at 20 ms), and wake-ups between every API request. 20 ms (progress: 100 ms) is unnoticeable to a person clicking.
QUEUE_POLL_S, PROGRESS_POLL_S = 0.02, 0.1

_CSS = """
.fc-review {color: #b45309; font-weight: 600}
.fc-ok {color: #15803d; font-weight: 600}
#fc-queue {min-height: 100vh}  /* tall enough to scroll the queue to the top of the screen */
.fc-top {display: flex; gap: 1.5em; align-items: baseline; flex-wrap: wrap}
.fc-top input {padding: 2px 6px; border: 1px solid #bbb; border-radius: 4px}
.fc-bar {display: flex; gap: .6em; align-items: center; flex-wrap: wrap; margin: .4em 0}
.fc-bar button, .fc-pager button {padding: 2px 10px; border: 1px solid #bbb; border-radius: 4px}
.fc-bar button.fc-on {background: #1d4ed8; color: white; border-color: #1d4ed8}
.fc-bar a {text-decoration: underline}
.fc-msg {min-height: 1.4em; font-weight: 600}
.fc-table {width: 100%; border-collapse: collapse; font-size: 14px}
.fc-table td, .fc-table th {padding: 1px 6px; border-bottom: 1px solid #e5e7eb; text-align: left; vertical-align: middle}
.fc-table tr.fc-cur {background: #dbeafe; outline: 2px solid #1d4ed8}
.fc-table img {width: 40px; height: 40px; object-fit: contain; background: white; display: block}
.fc-file {max-width: 16em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap}
.fc-flag {color: #b45309; font-size: 12px; white-space: nowrap}
.fc-audit {color: #7c3aed}
.fc-err {color: #b91c1c}
.fc-corrected b, .fc-not_a_product b {color: #b45309}
.fc-confirmed b {color: #15803d}
.fc-keys {font-size: 12px; color: #555; margin-top: .4em}
.fc-pager {margin-top: .3em}
"""
_JS = (Path(__file__).parent / "queue.js").read_text()
_BLANK = np.full((32, 32, 3), 235, np.uint8)  # in a failed row, where the photo would be


# "Не товар": a merchandiser's answer for a banner, a chart, a logo...; saved as chosen "not_a_product", chosen_index -1,
# which training (fashioncat.data.read_feedback, NOT_A_PRODUCT) never turns into a class label.
NOT_PRODUCT, NOT_PRODUCT_RU, NOT_PRODUCT_INDEX = "not_a_product", "Не товар", -1


def _label(engine: Engine, i: int) -> str:
    return NOT_PRODUCT_RU if i == NOT_PRODUCT_INDEX else f"{engine.classes_ru[i]} ({engine.classes[i]})"


def _named(engine: Engine, name: str) -> str:
    "The UI's label of an English class name (the name itself if the model has no such class)."
    if name == NOT_PRODUCT:
        return NOT_PRODUCT_RU
    return _label(engine, engine.classes.index(name)) if name in engine.classes else name


def _size_ru(n: int) -> str:
    "A byte count as a person reads it, in Russian: '10 МБ', '19,5 КБ'."
    for unit, k in (("МБ", 2**20), ("КБ", 2**10)):
        if n >= k:
            return f"{n / k:.1f}".removesuffix(".0").replace(".", ",") + " " + unit
    return f"{n} байт"


# what a merchandiser can do about each of the engine's error codes (fashioncat.serving); others show the English detail
_ERRORS_RU = {
    "empty": "файл пустой (0 байт). Загрузите сам файл фото ещё раз.",
    "not_an_image": "это не изображение. Загрузите фото в формате PNG, JPEG, WebP, BMP, GIF или TIFF.",
    "unsupported_format": "этот формат не поддерживается (например, HEIC, AVIF, SVG или PDF). "
    "Сохраните фото как JPEG или PNG и загрузите снова.",
    "corrupt_image": "файл повреждён или загружен не полностью. Откройте его, сохраните заново и загрузите снова.",
    "no_item": "на фото нет товара: изображение одного цвета. Проверьте, тот ли это файл.",
    "too_large": "файл больше {max_size}. Уменьшите фото (например, до 1000 пикселей по длинной стороне) "
    "и загрузите снова.",
    "too_many_pixels": "слишком большое разрешение. Уменьшите фото (например, до 1000 пикселей по длинной стороне) "
    "и загрузите снова.",
}


def _error_ru(r: dict, max_bytes: int) -> str:
    "A failed result's message for the merchandiser: Russian for the engine's codes, else the English detail."
    msg = _ERRORS_RU.get(r.get("error"))
    return msg.format(max_size=_size_ru(max_bytes)) if msg else str(r.get("detail") or r.get("error"))


def _md(text: str) -> str:
    "A file name as Markdown shows it literally (names like `my_photo_1.jpg` are common)."
    return re.sub(r"([\\`*_\[\]<>|~])", r"\\\1", text)


def _names(results: list[dict]) -> str:
    "' (a.jpg, b.jpg и ещё 3)': the first `_NAMED_MAX` file names; '' for none."
    if not results:
        return ""
    names = [_md(r.get("filename") or "без имени") for r in results]
    more = f" и ещё {len(names) - _NAMED_MAX}" if len(names) > _NAMED_MAX else ""
    return f" ({', '.join(names[:_NAMED_MAX])}{more})"


def _summary(results: list[dict]) -> str:
    "Photos categorised, the ones needing review by name, and the failed ones, counted apart."
    ok = [r for r in results if "error" not in r]
    review, failed = [r for r in ok if r["needs_review"]], [r for r in results if "error" in r]
    text = f"Обработано фото: {len(ok)}. Требуют проверки: {len(review)}{_names(review)}."
    return text + (f" Ошибок: {len(failed)}{_names(failed)}." if failed else "")


def _rank(r: dict) -> int:
    "Display order: failed first, then those needing review, then the rest."
    return 0 if "error" in r else 1 if r["needs_review"] else 2


@functools.cache
def _example_hashes() -> frozenset[str]:
    "The sha256 of each example: Fashion-MNIST test images, which must not become training data."
    return frozenset(hashlib.sha256(p.read_bytes()).hexdigest() for p in EXAMPLES_DIR.glob("*.png"))


def _example_caption(engine: Engine, path: str) -> str:
    "An example's caption: the Russian name of its class (the file is named '<class index>_<name>.png')."
    i = int(Path(path).stem.split("_", 1)[0])
    return engine.classes_ru[i] if i < len(engine.classes_ru) else Path(path).stem


def _refusal(message: str) -> gr.Error:
    "An expected refusal, shown to the merchandiser; not a server fault, so no traceback in the server's log."
    return gr.Error(message, title="Ошибка", print_exception=False)


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

    def start_batch(self, files: list[str] | None, name: str | None, request: gr.Request) -> tuple[str, None]:
        "Store the uploaded files as a new batch, processed in the background: (its id, the emptied file box)."
        s: Settings = self.app.state.settings
        files = _uploaded(files, s.batch_max_files)
        if not files:
            return "", None
        raw = getattr(request, "request", None)
        who = reviewer_of(raw, s.reviewer_header, name, getattr(request, "username", None))
        pairs = [(Path(f).name, Path(f)) for f in files]
        batch_id = self.app.state.workflow.start(pairs, who, error_ru=lambda r: _error_ru(r, s.max_bytes))
        return batch_id, None  # the box emptied: the queue, not the file list, takes the screen

    def categorise(self, files: list[str] | None) -> tuple[list[dict], str, list[dict]]:
        "Categorise uploaded files: (items for display, a summary line, the results as JSON)."
        s: Settings = self.app.state.settings
        files = _uploaded(files, s.max_batch)
        if not files:
            return [], "Загрузите одно или несколько фото товаров.", []
        items = [(Path(f).name, _read(Path(f), s.max_bytes)) for f in files]
        results = run_categorise(self.engine, self.app.state.metrics, items)
        shown, public = [], []
        for f, r in zip(files, results):
            item_id = uuid.uuid4().hex[:12]
            row = {"id": item_id, "path": f, **r}
            if "error" not in r:
                item = {"path": f, "view": r["view"], "filename": r["filename"], "predicted": r["category"], "confidence": r["confidence"]}  # fmt: skip
                self.recent[item_id] = row["item"] = item  # what a correction needs
                while len(self.recent) > _RECENT_MAX:
                    self.recent.popitem(last=False)
            shown.append(row)
            public.append({"id": item_id, **{k: v for k, v in r.items() if k != "view"}})
        shown.sort(key=_rank)  # stable: upload order within each group; the JSON keeps upload order, as the API
        return shown, _summary(results), public

    def _index(self, category: str | None) -> int:
        "The class index of an English name, a Russian one or the UI's 'Русское (English)' label, in any case."
        engine = self.engine
        labels = {name.casefold(): i for i, name in enumerate(engine.classes)}
        labels |= {name.casefold(): i for i, name in enumerate(engine.classes_ru)}
        labels |= {_label(engine, i).casefold(): i for i in range(len(engine.classes))}
        labels |= {n: NOT_PRODUCT_INDEX for n in (NOT_PRODUCT, NOT_PRODUCT_RU.casefold(), "not a product")}
        i = labels.get(str(category or "").strip().casefold())
        if i is None:
            raise _refusal(f"Неизвестная категория: {category!r}")
        return i

    def _who(self, request: gr.Request | None) -> str:
        s: Settings = self.app.state.settings
        return reviewer_of(
            getattr(request, "request", None), s.reviewer_header, None, getattr(request, "username", None)
        )

    def correct(self, item_id: str, category: str, request: gr.Request = None) -> str:
        """The API's correction of a result by its id (from `categorise`'s JSON), while the result is in the cache:
        `category` is an English name, a Russian one or the UI's 'Русское (English)' label, in any case."""
        i = self._index(category)
        item = self.recent.get(item_id)
        if item is None:
            raise _refusal(_STALE)
        return self._save(item, i, self._who(request))

    def correct_row(self, item: dict | None, category: str | None, request: gr.Request = None) -> str:
        """A result row's correction, from the row's own data in the session (not the shared cache); the row's status:
        what was saved, or, if nothing was, why (never a stale "Сохранено")."""
        try:
            if not item:
                raise _refusal(_STALE)
            return self._save(item, self._index(category), self._who(request))
        except gr.Error as e:
            return f"⚠ Не сохранено. {e.message}"
        except Exception as e:  # noqa: BLE001 - the upload gone, the database locked ...: the row says so, the log why
            app_log.error("correction not saved", exc_info=e, extra={"file": item.get("filename")})
            return (
                "⚠ Не сохранено: ошибка на сервере. Выберите категорию ещё раз; если не выйдет — загрузите фото заново."
            )

    def _save(self, item: dict, i: int, reviewer: str = "") -> str:
        "Store the correction of `item` to class `i` (replacing an earlier one of the same photo); the message."
        engine = self.engine
        image = Path(item["path"]).read_bytes()
        if hashlib.sha256(image).hexdigest() in _example_hashes():
            raise _refusal(
                "Это пример из тестового набора: его исправления не сохраняются, чтобы тестовые фото не попали в обучение."
            )
        saved = self.store.add(
            image=image,
            view=item["view"],
            filename=item["filename"],
            predicted=item["predicted"],
            confidence=item["confidence"],
            chosen=engine.classes[i] if i >= 0 else NOT_PRODUCT,
            chosen_index=i,
            model_version=engine.info.version,
            reviewer=reviewer,
        )
        model = f"(модель: {_named(engine, item['predicted'])})"
        if saved.replaced is not None:
            return f"Исправление заменено: было {_named(engine, saved.replaced)}, теперь {_label(engine, i)} {model}."
        return f"Сохранено: {_label(engine, i)} {model}."

    def table(self) -> list[list]:
        "The latest corrections, newest first, with the UI's category labels."
        engine, rows = self.engine, self.store.rows(limit=200)
        return [
            [
                _local_time(r["created_at"]),
                r["filename"],
                _named(engine, r["predicted"]),
                round(r["confidence"], 3),
                _named(engine, r["chosen"]),
            ]
            for r in rows
        ]

    def export_csv(self) -> str:
        "Every correction as CSV; the path of the file."
        out = Path(self.app.state.settings.data_dir) / "exports" / "feedback.csv"  # one file, replaced: none pile up
        names_ru = dict(zip(self.engine.classes, self.engine.classes_ru)) | {NOT_PRODUCT: NOT_PRODUCT_RU}
        return str(self.store.to_csv(out, names_ru))


def _local_time(utc: str) -> str:
    "A stored UTC time ('2026-12-06T22:40:00Z') as the server's local time, as a person reads it."
    return datetime.fromisoformat(utc).astimezone().strftime("%d.%m.%Y %H:%M:%S")


def _uploaded(files: list | None, most: int) -> list[str]:
    "The paths of uploaded files, refused if more than `most` or if one was not uploaded (nor an example)."
    files = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]
    if len(files) > most:
        raise _refusal(f"Слишком много фото за один раз: {len(files)}. Загрузите не больше {most}.")
    roots = [Path(get_upload_folder()).resolve(), EXAMPLES_DIR.resolve()]
    for f in files:  # only what was uploaded (or an example): never another file of the server
        if not any(Path(f).resolve().is_relative_to(root) for root in roots):
            raise _refusal(f"Файл {Path(f).name!r} не был загружен: загрузите фото через форму.")
    return files


def _read(path: Path, max_bytes: int) -> bytes | Exception:
    "The file's bytes, or the error for a file over `max_bytes` (not read)."
    n = path.stat().st_size
    return too_large(n, max_bytes) if n > max_bytes else path.read_bytes()


def _review_md(r: dict, engine: Engine) -> str:
    """Whether to check the answer, in plain words: the confidence as a whole percentage (rounded down, so that a
    doubtful 99.6% never reads as 100%); the review threshold itself stays out of the merchandiser's way."""
    conf = f"{int(r['confidence'] * 100)}%"
    if r.get("is_product") is False:
        return f"<span class='fc-review'>⚠ {NOT_PRODUCT_RU}?</span> Похоже, это не фото товара (баннер, таблица, логотип...): проверьте"
    if r["needs_review"]:
        return f"<span class='fc-review'>⚠ Требует проверки</span>: модель не уверена (уверенность {conf})"
    return f"<span class='fc-ok'>✓ Уверенно</span>: уверенность {conf}"


def build_ui(ui: UI) -> gr.Blocks:
    "The Blocks of the UI."
    examples = sorted(str(p) for p in EXAMPLES_DIR.glob("*.png"))
    s: Settings = ui.app.state.settings
    with gr.Blocks(title="fashioncat — категории товаров") as demo:
        gr.Markdown(
            "# Категоризация товаров по фото\n"
            f"Фото в форматах PNG, JPEG, WebP, BMP, GIF, TIFF, каждое не больше {_size_ru(s.max_bytes)}. "
            f"**Проверка партий** — импорт целиком, до {s.batch_max_files} фото: модель определяет категории, вы "
            "проверяете сомнительные с клавиатуры и скачиваете итог (CSV или Excel). "
            f"**Отдельные фото** — до {s.max_batch} фото за раз, с подробностями по каждому."
        )
        with gr.Tab("Проверка партий"):
            batch_files = gr.File(
                file_count="multiple", label="Фото партии (можно выбрать сразу сотни файлов)", height=110
            )
            reviewer, batch_id = gr.Textbox(visible=False), gr.Textbox(visible=False)
            gr.HTML("", elem_id="fc-queue", js_on_load=None, padding=False)
            batch_files.upload(
                ui.start_batch,
                inputs=[batch_files, reviewer],
                outputs=[batch_id, batch_files],
                js="(f, r) => [f, localStorage.getItem('fc-reviewer') || '']",  # the name the browser remembers
                api_visibility="private",
            ).then(None, inputs=[batch_id], js="(b) => { window.fcOpen(b); }")
        with gr.Tab("Отдельные фото"):
            gr.Markdown(
                "Для каждого фото — что увидела модель (28×28), три самые вероятные категории и отметка, если ответ "
                "нужно проверить; фото с ошибками и требующие проверки показаны первыми. "
                "Если категория неверна, выберите правильную — исправление сохранится одним щелчком "
                "(повторный выбор для того же фото заменяет прежний)."
            )
            with gr.Row():  # no file_types: gradio would refuse the whole selection for one non-image; each fails alone
                files = gr.File(file_count="multiple", label="Фото товаров", height=160)
            btn = gr.Button("Определить категории", variant="primary")
            with gr.Accordion("Примеры", open=False, visible=bool(examples)):
                gallery = gr.Gallery(
                    [(p, _example_caption(ui.engine, p)) for p in examples],
                    label="Примеры из тестового набора Fashion-MNIST: щелчок заменяет загруженные фото и результаты "
                    "на пример; исправления примеров не сохраняются",
                    columns=10,
                    height=150,
                    allow_preview=False,
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
                choices = [_label(engine, i) for i in range(len(engine.classes))] + [NOT_PRODUCT_RU]
                for r in shown:
                    with gr.Row(equal_height=False):
                        # a file that is not a picture gets a blank one, not the browser's broken-image icon
                        photo = _BLANK if "error" in r else r["path"]
                        gr.Image(photo, label=r.get("filename") or "фото", height=180, scale=1, buttons=[])
                        if "error" in r:
                            gr.Markdown(f"**Не удалось распознать:** {_error_ru(r, s.max_bytes)}")
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
                            item = gr.State(r["item"])  # this session's copy: no cache to fall out of
                            fix = gr.Radio(choices, value=None, label="Неверно? Выберите правильную категорию")
                            status = gr.Markdown()
                            fix.input(
                                ui.correct_row, inputs=[item, fix], outputs=[status], api_visibility="private"
                            ).then(ui.table, outputs=[table], api_visibility="private")

            fb_id, fb_cat = gr.Textbox(visible=False), gr.Textbox(visible=False)
            fb_out = gr.Textbox(visible=False)
            gr.Button(visible=False).click(ui.correct, inputs=[fb_id, fb_cat], outputs=[fb_out], api_name="correct")
        with gr.Tab("Исправления"):
            gr.Markdown(
                "Исправления, сделанные на первой вкладке: фото, ответ модели, выбранная категория и время. "
                "CSV содержит и сами изображения 28×28 (столбец `pixels`) — так исправления попадают в следующее обучение."
            )
            refresh = gr.Button("Обновить")
            table = gr.Dataframe(headers=["Время", "Файл", "Модель", "Уверенность", "Исправлено на"], interactive=False)
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
    blocks.delete_cache = (
        min(s.upload_max_age_s, 600),
        s.upload_max_age_s,
    )  # uploads go after FASHIONCAT_UPLOAD_MAX_AGE_S
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
        head=f"<script>{_JS}</script>",
        auth=ui_auth(s),  # app/core/auth.py: Gradio's login guards the page and its API routes alike
        auth_message="Войдите, чтобы проверять категории товаров.",
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
