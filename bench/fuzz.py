"""Property-based fuzzing of the API: schemathesis from the OpenAPI schema, and Hypothesis strategies for what a
schema does not describe (multipart bodies, JSON with huge numbers, lone surrogates, deep nesting and odd types,
headers, and PNG/JPEG/WebP/GIF/TIFF/BMP files with mutated bytes). The goal: no 5xx, no dropped connection, and a
healthy server after.

    .venv/bin/python bench/fuzz.py --requests 20000 --json bench/results/fuzz.json

It starts the service as the image does (uvicorn on 127.0.0.1 with app.core.edge's guarded httptools, API only) and
sends every request over real sockets, keep-alive, as raw bytes (so that malformed bodies and headers go out as
generated). tests/api/test_fuzz.py runs the same strategies in-process for a few thousand requests.
"""

import argparse
import base64
import http.client
import io
import json
import os
import random
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "app" / "examples" / "1_trouser.png"
ROUTES = ("/predict", "/predict/batch")


def base_images() -> dict[str, bytes]:
    "One small product photo in every accepted format."
    im = Image.open(EXAMPLE).convert("RGB").resize((56, 56))
    out = {}
    for fmt in ("PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP"):
        b = io.BytesIO()
        im.save(b, fmt)
        out[fmt] = b.getvalue()
    return out


IMAGES = base_images()


@st.composite
def image_bytes(draw) -> bytes:
    "A real image, then perhaps mutated: bytes flipped in its header, truncated, huge sizes in its header, junk added."
    data = bytearray(IMAGES[draw(st.sampled_from(sorted(IMAGES)))])
    how = draw(st.sampled_from(["asis", "flip", "truncate", "size", "append", "random"]))
    if how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, min(len(data), 96) - 1))
            data[i] = draw(st.integers(0, 255))
    elif how == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif how == "size":  # width and height fields of PNG's IHDR, or the same offsets in the other formats
        at = draw(st.sampled_from([16, 18, 20, 22, 6, 8]))
        data[at : at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x00\x01\x00\x00"]))
    elif how == "append":
        data += draw(st.binary(max_size=256))
    elif how == "random":
        data = bytearray(draw(st.binary(max_size=512)))
    return bytes(data)


_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
_HUGE = st.integers(4301, 6000).map(lambda n: "9" * n)  # past Python's int-parsing limit
_SURROGATE = st.sampled_from(['"\\ud800"', '"a\\udfffb"', '"\\udc00\\ud800"'])


def _raw_json(value) -> str:
    "JSON text for `value`, where `Raw` pieces go in unchanged (huge numbers, escapes of lone surrogates)."
    if isinstance(value, Raw):
        return value
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_raw_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_raw_json(v) for v in value) + "]"
    return json.dumps(value)


class Raw(str):
    "A piece of JSON text taken as is."


_ODD = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _TEXT,
    _HUGE.map(Raw), _SURROGATE.map(Raw), st.lists(st.integers(), max_size=3), st.dictionaries(_TEXT, st.integers(), max_size=2),
)  # fmt: skip
_B64 = image_bytes().map(lambda b: base64.b64encode(b).decode())


@st.composite
def json_body(draw) -> bytes:
    "A JSON body: the API's shapes with odd values, huge numbers or lone surrogates anywhere, deep nesting, or junk."
    kind = draw(st.sampled_from(["one", "batch", "deep", "junk", "odd"]))
    if kind == "deep":
        n = draw(st.integers(100, 200_000))
        return ("[" * n + "]" * draw(st.sampled_from([n, 0, n // 2]))).encode()
    if kind == "junk":
        return draw(st.binary(max_size=300))
    if kind == "odd":
        return _raw_json(draw(_ODD)).encode()
    item = {"image_base64": draw(st.one_of(_B64, _ODD)), "filename": draw(st.one_of(_TEXT, _ODD))}
    if draw(st.booleans()):
        item[draw(_TEXT)] = draw(_ODD)
    if kind == "one":
        return _raw_json(item).encode()
    items = draw(st.lists(st.one_of(st.just(item), _ODD), max_size=5))
    return _raw_json({"images": items} if draw(st.booleans()) else items).encode()


@st.composite
def multipart_body(draw) -> tuple[bytes, str]:
    "A multipart body and its content type: file parts with odd names and filenames, text parts, broken boundaries."
    boundary = draw(st.sampled_from(["fuzzb", "a" * 70, "x-y_z.1"]))
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(["file", "files", "image", ""]) | _TEXT)
        fname = draw(
            st.one_of(
                st.just("a.png"), _TEXT, st.text(min_size=1000, max_size=1100),
                st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
            )
        )  # fmt: skip
        disp = f'form-data; name="{name}"' + ("" if draw(st.booleans()) and name != "file" else f'; filename="{fname}"')
        ctype = draw(st.sampled_from(["image/png", "application/octet-stream", "text/plain", ""]))
        head = f"Content-Disposition: {disp}\r\n" + (f"Content-Type: {ctype}\r\n" if ctype else "")
        parts.append(
            f"--{boundary}\r\n".encode() + head.encode("utf-8", "surrogatepass") + b"\r\n" + draw(image_bytes())
        )
    body = (
        b"\r\n".join(parts)
        + (b"\r\n" if parts else b"")
        + draw(st.sampled_from([f"--{boundary}--\r\n".encode(), b"", b"--"]))
    )
    ctype = draw(st.sampled_from([f"multipart/form-data; boundary={boundary}", "multipart/form-data", "multipart/form-data; boundary=other"]))  # fmt: skip
    return body, ctype


_HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80)  # fmt: skip


@st.composite
def request(draw) -> tuple[str, str, dict[str, str], bytes]:
    "(method, path, headers, body) of one fuzzed request."
    path = draw(st.sampled_from(ROUTES))
    shape = draw(st.sampled_from(["json", "multipart", "raw"]))
    headers = {}
    if shape == "json":
        body, ctype = draw(json_body()), draw(st.sampled_from(["application/json", "application/json; charset=utf-8", "text/json"]))  # fmt: skip
    elif shape == "multipart":
        body, ctype = draw(multipart_body())
    else:
        body, ctype = draw(image_bytes()), draw(st.sampled_from(["image/png", "application/octet-stream", ""]) | _HEADER_VALUE)  # fmt: skip
    if ctype:
        headers["Content-Type"] = ctype
    for name in draw(st.lists(st.sampled_from(["X-Request-ID", "X-API-Key", "Accept", "X-Forwarded-For", "Cookie"]), max_size=3)):  # fmt: skip
        headers[name] = draw(_HEADER_VALUE)
    method = draw(st.sampled_from(["POST"] * 8 + ["GET", "PUT", "OPTIONS"]))
    return method, path, headers, body


def raw_request(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    "The request as bytes on the wire (latin-1 headers, as HTTP/1.1 carries them)."
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


KEEPALIVE_S = 4.0  # uvicorn closes a connection idle for 5 s: reuse only younger ones, as httpx does


class Connection:
    """One keep-alive connection to the server; reopened after the server closes it with its answer, or when it has
    been idle long enough for the server's keep-alive timeout (neither is a drop)."""

    def __init__(self, port: int):
        self.port, self.sock, self.last = port, None, 0.0

    def send(self, raw: bytes) -> tuple[int, bytes]:
        if self.sock is not None and time.monotonic() - self.last > KEEPALIVE_S:
            self.close()
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        self.sock.sendall(raw)
        resp = http.client.HTTPResponse(self.sock)
        resp.begin()
        body = resp.read()
        self.last = time.monotonic()
        if resp.will_close:
            self.close()
        return resp.status, body

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def run_hypothesis(port: int, n: int, stats: Counter, fails: list) -> None:
    "`n` requests drawn from `request()`, over one keep-alive connection."
    conn = Connection(port)

    @given(req=request())
    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=False)
    def one(req):
        try:
            status, body = conn.send(raw_request(*req))
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            stats["dropped"] += 1
            fails.append({"dropped": type(e).__name__, "request": repr(req)[:300]})
            return
        stats[f"status_{status}"] += 1
        stats["requests"] += 1
        if status >= 500:
            fails.append({"status": status, "body": body[:300].decode("latin-1"), "request": repr(req)[:300]})

    one()
    conn.close()


def run_schemathesis(port: int, n: int, stats: Counter, fails: list) -> None:
    "About `n` requests generated by schemathesis from the server's OpenAPI schema, with its server-error check."
    import schemathesis
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
    ops = [o.ok() for o in schema.get_all_operations()]
    for op in ops:
        _fuzz_operation(op, max(1, n // len(ops)), stats, fails, not_a_server_error)


def _fuzz_operation(op, n: int, stats: Counter, fails: list, check) -> None:
    "Up to `n` of schemathesis' cases for one operation."

    @given(case=op.as_strategy())
    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def one(case):
        try:
            r = case.call()
        except Exception as e:  # noqa: BLE001 - a connection the server dropped
            stats["dropped"] += 1
            fails.append({"dropped": type(e).__name__, "operation": op.label})
            return
        stats[f"status_{r.status_code}"] += 1
        stats["requests"] += 1
        try:
            case.validate_response(r, checks=[check])
        except Exception as e:  # noqa: BLE001 - schemathesis' report of a 5xx
            fails.append({"status": r.status_code, "operation": op.label, "check": str(e)[:300]})

    one()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=20_000, help="Hypothesis requests (schemathesis adds --schema)")
    p.add_argument("--schema", type=int, default=2_000, help="schemathesis requests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    random.seed(args.seed)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from load_test import Server, rss_bytes

    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", FASHIONCAT_UI_ENABLED="false", MALLOC_ARENA_MAX="2")
    srv = Server("fashioncat", "app.main:app", "/predict", http="app.core.edge:GuardedHttpTools")
    log = Path(tempfile.mkdtemp(prefix="fashioncat-fuzz-")) / "server.log"
    srv.start(sys.executable, 1, env, log)
    stats, fails = Counter(), []
    t0 = time.perf_counter()
    try:
        run_schemathesis(srv.port, args.schema, stats, fails)
        n_schema = stats["requests"]
        run_hypothesis(srv.port, args.requests, stats, fails)
        conn = Connection(srv.port)
        health = [conn.send(raw_request("GET", path, {}, b""))[0] for path in ("/health", "/ready")]
        ok = conn.send(raw_request("POST", "/predict", {"Content-Type": "image/png"}, b""))[0]  # still answering
        conn.close()
        res = {
            "requests": stats["requests"],
            "schemathesis_requests": n_schema,
            "hypothesis_requests": stats["requests"] - n_schema,
            "dropped_connections": stats["dropped"],
            "server_errors": sum(v for k, v in stats.items() if k.startswith("status_5")),
            "statuses": {k.removeprefix("status_"): v for k, v in sorted(stats.items()) if k.startswith("status_")},
            "healthy_after": health == [200, 200] and ok == 415 and srv.proc.poll() is None,
            "rss_after_mb": round(rss_bytes(srv.proc.pid) / 2**20),
            "peak_rss_mb": round(rss_bytes(srv.proc.pid, "VmHWM") / 2**20),
            "wall_s": round(time.perf_counter() - t0, 1),
            "failures": fails[:20],
        }
    finally:
        srv.stop()
    print(
        f"fuzz: {res['requests']:,} requests ({res['schemathesis_requests']:,} schemathesis, "
        f"{res['hypothesis_requests']:,} Hypothesis) in {res['wall_s']} s: {res['server_errors']} 5xx, "
        f"{res['dropped_connections']} dropped connections; statuses {res['statuses']}; "
        f"healthy after: {res['healthy_after']}; RSS after {res['rss_after_mb']} MB (peak {res['peak_rss_mb']} MB)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    res = main()
    sys.exit(0 if res["server_errors"] == 0 and res["dropped_connections"] == 0 and res["healthy_after"] else 1)
