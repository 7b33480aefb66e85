"""Admission control: a memory budget (`FASHIONCAT_MEMORY_BUDGET_MB`) that request bodies and image decodes take from
before they start, so that a burst of big photos or batches is answered 503 + `Retry-After` instead of growing the
process. One budget per process (memory is the process's), set by `create_app`.

What a request takes is estimated before the memory is spent: a body from its `Content-Length` (a JSON body about
three times over: the text, the parsed strings, the decoded images), a decode from the image header's width x height
at Pillow's bytes per pixel, twice (the decoded frame and the working copies of `fashioncat.photos`' recipe).
"""

import asyncio
import io
import threading
import time
import warnings
from contextlib import contextmanager

from PIL import Image

from fashioncat.photos import ServingError, sniff_format

from .errors import RequestError

RETRY_AFTER_S = 2  # what a refused client is told to wait
DECODE_FACTOR = 2  # a decode holds about twice its frame (measured with bench/big_photos.py)
JSON_FACTOR = 3  # a JSON body: the text, the parsed base64 strings, the decoded bytes
_ONE_BYTE = ("1", "L", "P")  # Pillow's modes stored at one byte per pixel; the others take four


class Overloaded(RequestError):
    "The memory budget is taken by requests in flight: retry shortly (503, `Retry-After`)."

    def __init__(self, what: str, n: int):
        super().__init__(
            f"the server is busy with other large requests ({what} needs ~{n / 2**20:,.0f} MB of its memory budget); "
            f"retry in {RETRY_AFTER_S} s",
            503,
            "overloaded",
            {"Retry-After": str(RETRY_AFTER_S)},
        )


class Budget:
    "A byte budget shared by the threads and the event loop of one process."

    def __init__(self, total: int, wait_s: float):
        self.total, self.wait_s, self.used = total, wait_s, 0
        self._cond = threading.Condition()

    def configure(self, total: int, wait_s: float) -> None:
        with self._cond:
            self.total, self.wait_s = total, wait_s
            self._cond.notify_all()

    def _take(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.used + n > self.total:
                left = deadline - time.monotonic()
                if left <= 0 or n > self.total:
                    return False
                self._cond.wait(left)
            self.used += n
            return True

    def release(self, n: int) -> None:
        with self._cond:
            self.used = max(0, self.used - n)
            self._cond.notify_all()

    def take(self, n: int, what: str) -> int:
        "Take `n` bytes, waiting up to `wait_s` (blocking: for worker threads); `Overloaded` if they do not come."
        if n > 0 and not self._take(n, self.wait_s):
            raise Overloaded(what, n)
        return max(n, 0)

    async def take_async(self, n: int, what: str) -> int:
        "`take` for the event loop: at once when the bytes are free, else the wait happens in a worker thread."
        if n <= 0 or self._take(n, 0):
            return max(n, 0)
        if not await asyncio.to_thread(self._take, n, self.wait_s):
            raise Overloaded(what, n)
        return n

    @contextmanager
    def held(self, n: int, what: str):
        "Hold `n` bytes (blocking) for the `with` block."
        got = self.take(n, what)
        try:
            yield
        finally:
            self.release(got)


BUDGET = Budget(340 * 2**20, 2.0)  # `create_app` sets it from the settings


def decode_cost(data: bytes, max_pixels: int) -> int:
    "The bytes decoding `data` will hold, from its header alone; 0 when the header is refused anyway (too big, bad)."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data), formats=[sniff_format(data)])
            w, h, mode = im.width, im.height, im.mode
            if im.format == "JPEG":  # decoded straight to a reduced size in grayscale (fashioncat.photos' draft)
                return _jpeg_cost(w, h)
    except (ServingError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return 0
    if w * h > max_pixels:
        return 0
    return w * h * (1 if mode in _ONE_BYTE else 4) * DECODE_FACTOR


def _jpeg_cost(w: int, h: int) -> int:
    from fashioncat.photos import _scale  # the recipe's own choice of reduction

    k = _scale((w, h))
    return (w // k) * (h // k) * 4 * DECODE_FACTOR


def body_cost(content_length: int | None, limit: int, json_body: bool) -> int:
    "The bytes reading a body will hold: its declared length (the route's limit when chunked), more for JSON."
    n = content_length if content_length is not None else limit
    return min(n, limit) * (JSON_FACTOR if json_body else 1)
