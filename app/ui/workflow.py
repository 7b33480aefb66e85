"""The review workflow around the batch store, shared by the UI's JSON routes and the REST API (no gradio here).

A batch is created at once and processed in a background thread, in chunks whose rows are committed as they are
done (the queue shows them as they come). Confident answers are sampled for audit (`FASHIONCAT_AUDIT_SHARE`). A change
of a row's final category is committed, with the corrections store's matching update, in one transaction.
"""

import io
import os
import random
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from fastapi import FastAPI, Request
from PIL import Image, ImageOps
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fashioncat.photos import too_large

from ..core.auth import LOCAL_REVIEWER, reviewer
from ..core.logs import app_log
from ..core.service import categorise
from .batches import FILTERS, BatchStore
from .feedback import drop, put

CHUNK = 32  # photos per inference batch and per commit: rows appear in the queue this many at a time
WORKERS = min(2, os.cpu_count() or 1)  # chunks processed at once (decoding releases the GIL)
THUMB = 96  # the thumbnail's longest side, pixels
ACTIONS = ("confirmed", "corrected", "not_a_product", "model")  # what a reviewer may set ('model': undone)


def reviewer_of(request: Request | None, header: str, given: str | None = None, username: str | None = None) -> str:
    """Who acts: the authenticated user (app.core.auth, when present), else the trusted proxy's `header`
    (`FASHIONCAT_REVIEWER_HEADER`), else Gradio's login, else the name the browser remembers (`given`)."""
    if request is not None:
        if (name := reviewer(request)) != LOCAL_REVIEWER:  # signed in through the UI's login
            return str(name)[:80]
        if header and request.headers.get(header):
            return request.headers[header].strip()[:80]
    return (username or given or "").strip()[:80]


def thumbnail(data: bytes) -> bytes | None:
    "A small JPEG of a photo for the queue (upright, on white where transparent); None if it cannot be read."
    try:
        im = Image.open(io.BytesIO(data))
        im.draft("RGB", (THUMB * 2, THUMB * 2))  # a JPEG decodes at a reduced scale: most of the cost saved
        im = ImageOps.exif_transpose(im)
        im.thumbnail((THUMB, THUMB))
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGB", im.size, "white")
            bg.paste(im, mask=im.getchannel("A"))
            im = bg
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", quality=80)
        return buf.getvalue()
    except Exception:  # noqa: BLE001 - a photo the model could read but the thumbnail not: the row shows no picture
        return None


def _png(view) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(view).save(buf, "PNG")
    return buf.getvalue()


class Workflow:
    "Batches of the app whose lifespan provides the engine, the metrics and the stores."

    def __init__(self, app: FastAPI, store: BatchStore):
        self.app, self.store = app, store
        self.threads: dict[str, threading.Thread] = {}

    @property
    def engine(self):
        return self.app.state.engine

    def names_ru(self) -> dict[str, str]:
        return dict(zip(self.engine.classes, self.engine.classes_ru))

    def start(self, files: list[tuple[str, Path]], reviewer: str, error_ru=None) -> str:
        "Create a batch of `files` (name, path) and process it in the background; its id at once."
        s = self.app.state.settings
        batch_id = self.store.create(len(files), reviewer, self.engine.info.version, s.audit_share)
        t = threading.Thread(
            target=self._process, args=(batch_id, files, error_ru), name=f"batch-{batch_id}", daemon=True
        )
        self.threads[batch_id] = t
        t.start()
        return batch_id

    def _process(self, batch_id: str, files: list[tuple[str, Path]], error_ru) -> None:
        "Categorise the batch chunk by chunk, `WORKERS` chunks at once, storing each chunk's rows as it is done."
        s, rng = self.app.state.settings, random.Random(batch_id)
        draws = [
            rng.random() for _ in files
        ]  # the audit's draws, fixed by the batch id whatever order chunks finish in
        chunks = [range(i, min(i + CHUNK, len(files))) for i in range(0, len(files), CHUNK)]

        def rows(chunk: range) -> list[dict]:
            items = [(files[k][0], self._read(files[k][1], s.max_bytes)) for k in chunk]
            results = categorise(self.engine, self.app.state.metrics, items)
            return [self._row(k, data, r, draws[k] < s.audit_share, error_ru) for k, (_, data), r in zip(chunk, items, results)]  # fmt: skip

        try:
            with ThreadPoolExecutor(WORKERS, thread_name_prefix=f"batch-{batch_id}") as pool:
                for done in as_completed([pool.submit(rows, c) for c in chunks]):
                    self.store.add_rows(batch_id, done.result())
            self.store.finish(batch_id)
        except Exception as e:  # noqa: BLE001 - the batch says why; the rows stored so far stay
            app_log.error("batch processing failed", exc_info=e, extra={"batch": batch_id})
            self.store.finish(batch_id, f"{type(e).__name__}: {e}")
        finally:
            self.threads.pop(batch_id, None)

    @staticmethod
    def _read(path: Path, max_bytes: int) -> bytes | Exception:
        "The file's bytes, or the error for a file over `max_bytes` (not read) or one that cannot be read."
        try:
            n = path.stat().st_size
            return too_large(n, max_bytes) if n > max_bytes else path.read_bytes()
        except OSError as e:
            return e

    def _row(self, idx: int, data, r: dict, drawn: bool, error_ru) -> dict:
        "The stored row of one result, with its thumbnail; a confident answer is audited when `drawn`."
        row = {"idx": idx, "filename": r.get("filename")}
        if "error" in r:
            msg = error_ru(r) if error_ru else r.get("detail")
            return row | {"error": r["error"], "error_ru": msg, "source": "failed"}
        audit = not r["needs_review"] and drawn
        is_product = r.get("is_product")
        return row | {
            "image": data, "thumb": thumbnail(data), "view_png": _png(r["view"]), "predicted": r["category"],
            "predicted_index": r["class_index"], "confidence": r["confidence"], "needs_review": int(r["needs_review"]),
            "audit": int(audit), "is_product": None if is_product is None else int(bool(is_product)),
            "final": r["category"], "final_index": r["class_index"], "source": "model",
        }  # fmt: skip

    def change(self, batch_id: str, changes: list[dict], reviewer: str) -> tuple[list[dict], list]:
        """Set rows' final categories: each change is {idx, version, source, final_index (for `corrected`)}; a
        `corrected` to the model's own class is a confirmation. Raises ValueError for a change that makes no sense."""
        classes, todo, rows = self.engine.classes, [], {}
        for c in changes:
            src, i = c.get("source"), c.get("final_index")
            if src not in ACTIONS:
                raise ValueError(f"source must be one of {', '.join(ACTIONS)}, got {src!r}")
            row = rows[c["idx"]] = self.store.row(batch_id, int(c["idx"]))
            if row is None:
                raise ValueError(f"no row {c['idx']} in batch {batch_id}")
            if src == "corrected" and not (isinstance(i, int) and 0 <= i < len(classes)):
                raise ValueError(f"a correction needs final_index, a class number 0-{len(classes) - 1}")
            if src == "corrected" and i == row["predicted_index"]:
                src = "confirmed"
            final = {"corrected": i, "not_a_product": None}.get(src, row["predicted_index"])
            todo.append({"idx": int(c["idx"]), "version": int(c["version"]), "source": src, "final_index": final,
                         "final": None if final is None else classes[final]})  # fmt: skip
        return self.store.change(batch_id, todo, reviewer, self._corrections(batch_id, reviewer))

    def _corrections(self, batch_id: str, reviewer: str):
        "The corrections store's update for a changed row, in the same transaction: a class correction is training data."
        version = self.engine.info.version

        def sync(db, before: dict, after: dict) -> None:
            if after["source"] == before["source"] == "model" or "corrected" not in (after["source"], before["source"]):
                return
            q = "SELECT image, view_png FROM batch_rows WHERE batch_id = ? AND idx = ?"
            blobs = db.execute(q, (batch_id, after["idx"])).fetchone()
            if after["source"] == "corrected":
                put(db, image=blobs[0], view_png=blobs[1], filename=after["filename"], predicted=after["predicted"],
                    confidence=after["confidence"], chosen=after["final"], chosen_index=after["final_index"],
                    model_version=version, reviewer=reviewer)  # fmt: skip
            else:
                drop(db, blobs[0])

        return sync

    def thumb(self, batch_id: str, idx: int) -> bytes | None:
        "A row's thumbnail (made again if it was lost or failed: kept once made); None for a row without a photo."
        r = self.store.row(batch_id, idx, "thumb, image")
        if not r or r["thumb"] or not r["image"]:
            return r and r["thumb"]
        data = thumbnail(r["image"])
        if data is not None:
            self.store.set_thumb(batch_id, idx, data)
        return data

    def accept_rest(self, batch_id: str, flt: str, reviewer: str) -> list[dict]:
        "Confirm every unreviewed row of the filter `flt`: the rows changed (with their new versions, for an undo)."
        if flt not in FILTERS:
            raise ValueError(f"filter must be one of {', '.join(FILTERS)}, got {flt!r}")
        todo = [
            {"idx": r["idx"], "version": r["version"], "source": "confirmed"} for r in self.store.pending(batch_id, flt)
        ]
        done, _ = self.change(batch_id, todo, reviewer)
        return done


class StoredMetrics(Collector):
    """Figures read from the stores when /metrics is scraped: corrections stored (not clicks: a replaced or undone one
    is gone) and the audit of confident answers over every batch."""

    def __init__(self, store: BatchStore):
        self.store = store

    def collect(self):
        with sqlite3.connect(self.store.path, timeout=10) as db:
            counts = db.execute("SELECT chosen, COUNT(*) FROM feedback GROUP BY chosen").fetchall()
        fb = CounterMetricFamily(
            "fashioncat_feedback", "Corrections stored (UI), by corrected category", labels=["category"]
        )
        for category, n in counts:
            fb.add_metric([category], n)
        yield fb
        a = self.store.audit_totals()
        yield GaugeMetricFamily("fashioncat_audit_rows", "Confident answers sampled for audit", value=a["rows"])
        yield GaugeMetricFamily("fashioncat_audit_reviewed", "Audited answers reviewed", value=a["reviewed"])
        yield GaugeMetricFamily(
            "fashioncat_audit_errors", "Audited answers the reviewers found wrong", value=a["errors"]
        )
        rate = GaugeMetricFamily("fashioncat_audit_error_rate", "Errors among reviewed audited answers")
        if a["error_rate"] is not None:
            rate.add_metric([], a["error_rate"])
        yield rate


def open_workflow(app: FastAPI, path: Path) -> Workflow:
    """The workflow on the batch store at `path` (the corrections' file), its figures on /metrics; batches a stopped
    server left processing are marked interrupted."""
    store = BatchStore(path)
    if n := store.interrupted():
        app_log.warning("batches interrupted by a restart", extra={"batches": n})
    metrics = app.state.metrics
    for c in metrics.stored:
        metrics.registry.unregister(c)
    metrics.stored = [StoredMetrics(store)]
    metrics.registry.register(metrics.stored[0])
    return Workflow(app, store)
