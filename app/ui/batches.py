"""The batch store: each upload of the review UI is a batch whose rows keep the photo, the model's answer and the final
category, in SQLite beside the corrections (WAL; every change committed before the UI reports it saved).

A row's `source` says where its final category comes from: `model` (not reviewed yet), `confirmed` (a reviewer accepted
the model's answer), `corrected` (a reviewer chose another category), `not_a_product` (no category: not a product
photo) or `failed` (the photo could not be read). Every change carries the row's `version` as the client last saw it:
a change to a row that someone else changed since is refused as a conflict, never applied over theirs.
"""

import csv
import io
import sqlite3
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

SOURCES = ("model", "confirmed", "corrected", "not_a_product", "failed")
REVIEWED = ("confirmed", "corrected", "not_a_product")
SOURCES_RU = {
    "model": "ответ модели (не проверен)",
    "confirmed": "подтверждено",
    "corrected": "исправлено",
    "not_a_product": "не товар",
    "failed": "ошибка",
}
# what each filter of the queue shows (SQL over `rows`); `review` also holds the audited confident answers
FILTERS = {
    "review": "error IS NULL AND (needs_review = 1 OR audit = 1 OR is_product = 0)",
    "not_product": "error IS NULL AND (is_product = 0 OR source = 'not_a_product')",
    "corrected": "source IN ('corrected', 'not_a_product')",
    "failed": "source = 'failed'",
    "all": "1 = 1",
}
EXPORT_COLUMNS = ["file", "category_ru", "category", "source", "model_category_ru", "model_category", "confidence",
                  "is_product", "audit", "reviewer", "time", "error"]  # fmt: skip

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS batches (
        id TEXT PRIMARY KEY, created_at REAL NOT NULL, reviewer TEXT NOT NULL DEFAULT '', n_files INTEGER NOT NULL,
        done INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT 'processing', model_version TEXT NOT NULL,
        audit_share REAL NOT NULL, error TEXT)""",
    """CREATE TABLE IF NOT EXISTS batch_rows (
        batch_id TEXT NOT NULL REFERENCES batches(id), idx INTEGER NOT NULL, filename TEXT, image BLOB, thumb BLOB,
        view_png BLOB, predicted TEXT, predicted_index INTEGER, confidence REAL, needs_review INTEGER NOT NULL DEFAULT 0,
        audit INTEGER NOT NULL DEFAULT 0, is_product INTEGER, error TEXT, error_ru TEXT, final TEXT, final_index INTEGER,
        source TEXT NOT NULL, reviewer TEXT NOT NULL DEFAULT '', updated_at REAL NOT NULL,
        version INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (batch_id, idx))""",
]
_ROW = ("idx, filename, predicted, predicted_index, confidence, needs_review, audit, is_product, error, error_ru, final,"
        " final_index, source, reviewer, updated_at, version")  # fmt: skip


class Conflict(NamedTuple):
    "A change refused: the row as it is now (changed by someone else since the client read it)."

    idx: int
    row: dict


def _local(t: float | None) -> str:
    "A time as the server's local time with its UTC offset, to the second (what a spreadsheet and a person read)."
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds") if t else ""


class BatchStore:
    "Batches and their rows in one SQLite file; safe to use from the UI's threads and the background processing."

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the writer; persistent in the file
            for s in _SCHEMA:
                db.execute(s)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        # committed to the WAL before the UI says "saved": kept through a crash or kill -9 of the server; without an fsync
        # per commit (NORMAL), so that saves do not queue behind the disk (a power cut may lose the last seconds)
        db.execute("PRAGMA synchronous=NORMAL")
        db.row_factory = sqlite3.Row
        return db

    def create(self, n_files: int, reviewer: str, model_version: str, audit_share: float) -> str:
        "A new batch of `n_files` photos, processing; its id."
        batch_id = uuid.uuid4().hex[:12]
        with self._lock, self._connect() as db:
            db.execute(
                "INSERT INTO batches (id, created_at, reviewer, n_files, model_version, audit_share) VALUES (?,?,?,?,?,?)",
                (batch_id, time.time(), reviewer, n_files, model_version, audit_share),
            )
        return batch_id

    def add_rows(self, batch_id: str, rows: list[dict]) -> None:
        "Store processed rows (dicts of `batch_rows` columns, `idx` included) and count them as done, in one commit."
        now = time.time()
        with self._lock, self._connect() as db:
            for r in rows:
                r = {"batch_id": batch_id, "updated_at": now, "reviewer": "", **r}
                cols = ", ".join(r)
                db.execute(f"INSERT INTO batch_rows ({cols}) VALUES ({', '.join('?' * len(r))})", tuple(r.values()))
            db.execute("UPDATE batches SET done = done + ? WHERE id = ?", (len(rows), batch_id))

    def finish(self, batch_id: str, error: str | None = None) -> None:
        "Mark a batch processed (`ready`), or `failed` with the reason."
        with self._lock, self._connect() as db:
            db.execute("UPDATE batches SET status = ?, error = ? WHERE id = ?", ("failed" if error else "ready", error, batch_id))  # fmt: skip

    def interrupted(self) -> int:
        "Mark batches left `processing` by a stopped server as failed (their stored rows stay); how many."
        with self._lock, self._connect() as db:
            return db.execute(
                "UPDATE batches SET status = 'failed', error = 'interrupted' WHERE status = 'processing'"
            ).rowcount

    def batch(self, batch_id: str) -> dict | None:
        "A batch with its counts by source, its pending reviews and its audit figures; None if there is none."
        with self._connect() as db:
            b = db.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if b is None:
                return None
            counts = dict(db.execute("SELECT source, COUNT(*) FROM batch_rows WHERE batch_id = ? GROUP BY source", (batch_id,)).fetchall())  # fmt: skip
            pending = db.execute(
                f"SELECT COUNT(*) FROM batch_rows WHERE batch_id = ? AND source = 'model' AND {FILTERS['review']}",
                (batch_id,),
            ).fetchone()[0]
            audit = self._audit(db, "WHERE batch_id = ?", (batch_id,))
        return {**dict(b), "counts": {s: counts.get(s, 0) for s in SOURCES}, "pending": pending, "audit": audit}

    @staticmethod
    def _audit(db: sqlite3.Connection, where: str, args: tuple) -> dict:
        "Audited rows: how many, how many reviewed, how many of those the model got wrong, and that error rate."
        q = ("SELECT COUNT(*), COALESCE(SUM(source IN ('confirmed','corrected','not_a_product')), 0),"
             f" COALESCE(SUM(source IN ('corrected','not_a_product')), 0) FROM batch_rows {where} AND audit = 1")  # fmt: skip
        n, reviewed, wrong = db.execute(q if where else q.replace(" AND", " WHERE", 1), args).fetchone()
        return {"rows": n, "reviewed": reviewed, "errors": wrong, "error_rate": wrong / reviewed if reviewed else None}

    def audit_totals(self) -> dict:
        "The audit figures over every batch (for /metrics)."
        with self._connect() as db:
            return self._audit(db, "", ())

    def batches(self, limit: int = 50) -> list[dict]:
        "The latest batches, newest first, with their counts."
        with self._connect() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM batches ORDER BY created_at DESC LIMIT ?", (limit,))]
        return [self.batch(i) for i in ids]

    def rows(
        self, batch_id: str, flt: str = "all", offset: int = 0, limit: int | None = None
    ) -> tuple[list[dict], int]:
        "A page of a batch's rows in the filter `flt`, in upload order, and the filter's total."
        where = f"batch_id = ? AND {FILTERS[flt]}"
        with self._connect() as db:
            total = db.execute(f"SELECT COUNT(*) FROM batch_rows WHERE {where}", (batch_id,)).fetchone()[0]
            q = f"SELECT {_ROW} FROM batch_rows WHERE {where} ORDER BY idx LIMIT ? OFFSET ?"
            rows = [dict(r) for r in db.execute(q, (batch_id, -1 if limit is None else limit, offset))]
        return rows, total

    def row(self, batch_id: str, idx: int, columns: str = _ROW) -> dict | None:
        with self._connect() as db:
            r = db.execute(
                f"SELECT {columns} FROM batch_rows WHERE batch_id = ? AND idx = ?", (batch_id, idx)
            ).fetchone()
        return dict(r) if r else None

    def set_thumb(self, batch_id: str, idx: int, data: bytes) -> None:
        "Keep a row's thumbnail (not a change of the row: its version stays)."
        with self._lock, self._connect() as db:
            db.execute("UPDATE batch_rows SET thumb = ? WHERE batch_id = ? AND idx = ?", (data, batch_id, idx))

    def change(
        self, batch_id: str, changes: list[dict], reviewer: str, on_change=None
    ) -> tuple[list[dict], list[Conflict]]:
        """Apply `changes` ({idx, version, source, final, final_index}) in one transaction: the rows changed, and the
        conflicts (rows whose version is no longer the one given, left as they are). `on_change(db, before, after)`
        runs inside the transaction for each changed row (the corrections store's update)."""
        done, conflicts, now = [], [], time.time()
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            for c in changes:
                before = db.execute(f"SELECT {_ROW} FROM batch_rows WHERE batch_id = ? AND idx = ?", (batch_id, c["idx"])).fetchone()  # fmt: skip
                if before is None or before["version"] != c["version"] or before["source"] == "failed":
                    if before is not None:
                        conflicts.append(Conflict(c["idx"], dict(before)))
                    continue
                db.execute(
                    "UPDATE batch_rows SET source = ?, final = ?, final_index = ?, reviewer = ?, updated_at = ?,"
                    " version = version + 1 WHERE batch_id = ? AND idx = ?",
                    (c["source"], c["final"], c["final_index"], reviewer, now, batch_id, c["idx"]),
                )
                after = dict(db.execute(f"SELECT {_ROW} FROM batch_rows WHERE batch_id = ? AND idx = ?", (batch_id, c["idx"])).fetchone())  # fmt: skip
                if on_change is not None:
                    on_change(db, dict(before), after)
                done.append(after)
        return done, conflicts

    def pending(self, batch_id: str, flt: str) -> list[dict]:
        "The unreviewed rows (source `model`) of a filter: what 'принять остальные' accepts."
        with self._connect() as db:
            q = f"SELECT idx, version, predicted, predicted_index FROM batch_rows WHERE batch_id = ? AND source = 'model' AND {FILTERS[flt]}"
            return [dict(r) for r in db.execute(q + " ORDER BY idx", (batch_id,))]

    def export_rows(self, batch_id: str, names_ru: dict[str, str]) -> list[dict]:
        "Every row of a batch as the export's columns (`EXPORT_COLUMNS`), in upload order."
        out = []
        for r in self.rows(batch_id)[0]:
            out.append({
                "file": r["filename"] or "",
                "category_ru": names_ru.get(r["final"] or "", ""),
                "category": r["final"] or "",
                "source": r["source"],
                "model_category_ru": names_ru.get(r["predicted"] or "", ""),
                "model_category": r["predicted"] or "",
                "confidence": "" if r["confidence"] is None else round(r["confidence"], 4),
                "is_product": "" if r["is_product"] is None else bool(r["is_product"]),
                "audit": bool(r["audit"]),
                "reviewer": r["reviewer"],
                "time": _local(r["updated_at"]),
                "error": r["error_ru"] or r["error"] or "",
            })  # fmt: skip
        return out


_FORMULA = ("=", "+", "-", "@", "\t", "\r")  # a cell starting so is a formula to Excel and LibreOffice


def _cell(v):
    "A text cell a spreadsheet shows as text, never runs as a formula (file names and reviewers are user input)."
    return "'" + v if isinstance(v, str) and v.startswith(_FORMULA) else v


def to_csv(rows: list[dict]) -> bytes:
    "The export as CSV bytes (UTF-8 with a BOM, so that Excel reads it as UTF-8)."
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, EXPORT_COLUMNS)
    w.writeheader()
    w.writerows({k: _cell(v) for k, v in r.items()} for r in rows)
    return "\ufeff".encode() + f.getvalue().encode()


def to_xlsx(rows: list[dict]) -> bytes:
    "The export as an Excel workbook (one sheet, a header row, the confidence as a number)."
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("batch")
    ws.append(EXPORT_COLUMNS)
    for r in rows:
        ws.append([_cell(r[c]) for c in EXPORT_COLUMNS])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
