"""The feedback store: corrections made in the UI, in SQLite under `FASHIONCAT_DATA_DIR`, exportable as CSV.

Each row keeps the original image, the 28x28 view the model saw, the model's answer and confidence, the category
the merchandiser chose, who chose it and the time. One correction per image: a later one of the same image (same bytes) replaces it. The CSV carries the view as 784 pixel values, so the next training run can use
the corrections as labelled examples without re-running the preprocessing (see README, "Serving").
"""

import csv
import hashlib
import io
import sqlite3
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from fashioncat.batch import csv_safe  # one rule for formula-like cells, shared with fashioncat_predict

_SCHEMA = """CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    filename TEXT,
    image_sha256 TEXT NOT NULL,
    image BLOB NOT NULL,
    view_png BLOB NOT NULL,
    predicted TEXT NOT NULL,
    confidence REAL NOT NULL,
    chosen TEXT NOT NULL,
    chosen_index INTEGER NOT NULL,
    model_version TEXT NOT NULL,
    reviewer TEXT NOT NULL DEFAULT ''
)"""
_INDEX = "CREATE INDEX IF NOT EXISTS feedback_image_sha256 ON feedback (image_sha256)"  # added to older files too
_ROW_COLUMNS = [
    "id",
    "created_at",
    "filename",
    "image_sha256",
    "predicted",
    "confidence",
    "chosen",
    "chosen_index",
    "model_version",
    "reviewer",
]
# training (fashioncat.data.read_feedback) reads `chosen_index` and `pixels` by name; `chosen_ru` is for people
CSV_COLUMNS = [*_ROW_COLUMNS[:7], "chosen_ru", *_ROW_COLUMNS[7:], "pixels"]
_INSERT = ("INSERT INTO feedback (created_at, filename, image_sha256, image, view_png, predicted, confidence, chosen,"
           " chosen_index, model_version, reviewer) VALUES (?,?,?,?,?,?,?,?,?,?,?)")  # fmt: skip


class Saved(NamedTuple):
    "What `FeedbackStore.add` did: the new row's id, and the category of the earlier correction it replaced, if any."

    id: int
    replaced: str | None


def put(
    db: sqlite3.Connection,
    *,
    image: bytes,
    view_png: bytes,
    filename: str | None,
    predicted: str,
    confidence: float,
    chosen: str,
    chosen_index: int,
    model_version: str,
    reviewer: str = "",
) -> Saved:
    "Store one correction in the open transaction of `db`, replacing any earlier one of the same image."
    sha = hashlib.sha256(image).hexdigest()
    old = db.execute("SELECT chosen FROM feedback WHERE image_sha256 = ? ORDER BY id DESC", (sha,)).fetchone()
    db.execute("DELETE FROM feedback WHERE image_sha256 = ?", (sha,))
    row = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), filename, sha, image, view_png, predicted,
           float(confidence), chosen, int(chosen_index), model_version, reviewer)  # fmt: skip
    return Saved(int(db.execute(_INSERT, row).lastrowid), old[0] if old else None)


def drop(db: sqlite3.Connection, image: bytes) -> int:
    "Remove the correction of an image (an undone one) in the open transaction of `db`; how many rows went."
    return db.execute("DELETE FROM feedback WHERE image_sha256 = ?", (hashlib.sha256(image).hexdigest(),)).rowcount


class FeedbackStore:
    "Corrections in one SQLite file; safe to use from the UI's worker threads."

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute(_SCHEMA)
            db.execute(_INDEX)
            if "reviewer" not in {r[1] for r in db.execute("PRAGMA table_info(feedback)")}:  # a file from before
                db.execute("ALTER TABLE feedback ADD COLUMN reviewer TEXT NOT NULL DEFAULT ''")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def add(self, *, image: bytes, view: np.ndarray, filename: str | None, predicted: str, confidence: float,
            chosen: str, chosen_index: int, model_version: str, reviewer: str = "") -> Saved:  # fmt: skip
        "Store one correction, replacing any earlier one of the same image (in one transaction)."
        buf = io.BytesIO()
        Image.fromarray(np.asarray(view, np.uint8)).save(buf, "PNG")
        with self._lock, self._connect() as db:  # the lock orders this process's threads, IMMEDIATE other processes
            db.execute("BEGIN IMMEDIATE")
            return put(db, image=image, view_png=buf.getvalue(), filename=filename, predicted=predicted,
                       confidence=confidence, chosen=chosen, chosen_index=chosen_index, model_version=model_version,
                       reviewer=reviewer)  # fmt: skip

    def count(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]

    def rows(self, limit: int | None = None, pixels: bool = False) -> list[dict]:
        "The corrections, newest first; with `pixels`, the 28x28 view as 784 space-separated values."
        q = f"SELECT {', '.join(_ROW_COLUMNS)}, view_png FROM feedback ORDER BY id DESC"
        with self._connect() as db:
            cur = db.execute(q + (f" LIMIT {int(limit)}" if limit else ""))
            out = []
            for r in cur.fetchall():
                d = dict(zip(_ROW_COLUMNS, r[:-1]))
                if pixels:
                    d["pixels"] = " ".join(map(str, np.asarray(Image.open(io.BytesIO(r[-1]))).ravel()))
                out.append(d)
            return out

    def to_csv(self, path: str | Path, names_ru: dict[str, str] | None = None) -> Path:
        """Write every correction, oldest first, as CSV (the `pixels` column is the model's 28x28 input), with a BOM so
        that Excel reads it as UTF-8; `chosen_ru` is the chosen category's Russian name from `names_ru` (English: Russian)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")  # written whole, then swapped in
        with open(tmp, "w", newline="", encoding="utf-8-sig") as f:
            w = csv.DictWriter(f, CSV_COLUMNS)
            w.writeheader()
            for r in reversed(self.rows(pixels=True)):
                ru = (names_ru or {}).get(r["chosen"], "")
                w.writerow({**r, "filename": csv_safe(r["filename"]), "chosen_ru": ru})
        tmp.replace(path)
        return path


def open_store(path: str | Path) -> tuple[FeedbackStore | None, str]:
    """The store at `path` checked for use (its folder writable, the file a database of this schema, writes allowed),
    or None and why not: the UI reports it, the API does not depend on it."""
    try:
        store = FeedbackStore(path)
        with store._connect() as db:
            cols = {r[1] for r in db.execute("PRAGMA table_info(feedback)")}
            missing = set(_ROW_COLUMNS) - cols
            if missing:
                return None, f"{store.path} has a feedback table without {sorted(missing)}: not this app's database"
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                return None, f"{store.path} is damaged (PRAGMA quick_check)"
            db.execute("BEGIN IMMEDIATE")  # takes the write lock: fails on a read-only file or folder
            db.rollback()
        return store, ""
    except (OSError, sqlite3.Error) as e:
        return None, f"the corrections database {Path(path)} cannot be used: {type(e).__name__}: {e}"
