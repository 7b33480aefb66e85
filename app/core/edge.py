"""Limits at the edge, inside uvicorn: a request's headers must arrive within `FASHIONCAT_HEADER_TIMEOUT_S` and fit in
`FASHIONCAT_MAX_HEADER_BYTES`, and a body must keep flowing (no `FASHIONCAT_HEADER_TIMEOUT_S` without a byte); the
parser's own refusals answer in the API's JSON shape instead of uvicorn's plain text.

uvicorn has no header timeout, and its httptools parser no header size limit (a 64 MB header is read whole), so the
service runs its httptools protocol with these guards, with no proxy needed in front:

    uvicorn app.main:app --loop uvloop --http app.core.edge:GuardedHttpTools

They are environment variables, not `Settings` fields: uvicorn builds the protocol before it imports the app.
"""

import json
import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _env_number(name: str, default: float, low: float, high: float) -> float:
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw.strip() else default
    except ValueError:
        raise SystemExit(f"fashioncat: invalid settings: {name}={raw!r}: not a number") from None
    if not low <= value <= high:
        raise SystemExit(f"fashioncat: invalid settings: {name}={raw!r}: must be between {low:g} and {high:g}")
    return value


HEADER_TIMEOUT_S = _env_number("FASHIONCAT_HEADER_TIMEOUT_S", 10, 1, 300)  # for the headers; then per body gap
MAX_HEADER_BYTES = int(_env_number("FASHIONCAT_MAX_HEADER_BYTES", 32 * 1024, 1024, 1024 * 1024))  # URL + headers
_STATUS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}


class GuardedHttpTools(HttpToolsProtocol):
    "uvicorn's httptools protocol with a header deadline, a body idle timeout, a header size limit and JSON refusals."

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._timer = None
        self._header_bytes = self._raw = self._boundaries = 0
        self._refused = False
        self._reading_headers = True
        self._arm()  # the first request's headers are due from the moment the connection opens

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._timer = self.loop.call_later(HEADER_TIMEOUT_S, self._timed_out)

    def _disarm(self) -> None:
        if getattr(self, "_timer", None) is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # waiting for headers: tell the client
            self._refuse(408, "request_timeout", f"the request headers did not arrive within {HEADER_TIMEOUT_S:g} s")
        else:  # a body that stopped flowing: the app sees the client gone (logged as 499)
            self.transport.close()

    def _refuse(self, status: int, code: str, detail: str) -> None:
        "Answer `status` in the API's JSON shape and close the connection."
        self._refused = True
        body = json.dumps({"error": code, "detail": detail, "request_id": ""}).encode()
        head = (
            f"HTTP/1.1 {status} {_STATUS[status]}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        if not self.transport.is_closing():
            self.transport.write(head.encode() + body)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        seen = self._boundaries
        super().data_received(data)
        if self._boundaries != seen:  # a request's headers or end were in these bytes: count from the next ones
            self._raw = 0
        elif self._reading_headers and not self._refused:  # headers still incomplete after these bytes: count them
            self._raw += len(data)
            if self._raw > MAX_HEADER_BYTES:
                self._refuse(
                    431, "headers_too_large", f"the request line and headers exceed {MAX_HEADER_BYTES:,} bytes"
                )

    def send_400_response(self, msg: str) -> None:  # the parser refused the request: JSON, like every other error
        if not self._refused:
            self._refuse(400, "bad_request", f"{msg.rstrip('.')}: the request is not valid HTTP/1.1")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = self._raw = 0
        self._reading_headers = True
        if self._timer is None:
            self._arm()

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(431, "headers_too_large", f"the request line and headers exceed {MAX_HEADER_BYTES:,} bytes")
            raise ValueError("headers too large")  # stops the parser; send_400_response then stays silent

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._boundaries += 1
        self._disarm()
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.more_body:
            self._arm()  # the body must keep flowing

    def on_body(self, body: bytes) -> None:
        self._arm()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._reading_headers = True  # the next request's headers, if any, are counted from here
        self._boundaries += 1
        self._disarm()
        super().on_message_complete()
