"""Reading images out of requests: multipart files or base64 in JSON, with the byte limits enforced while reading.

The limit is checked on `Content-Length` before anything is read, and again while the body streams in (for chunked
uploads), so an oversized upload is refused with 413 without being buffered.

A small single-file upload (`/predict` as curl, httpx or requests send it) is read straight from the body: the general
multipart parser costs about 0.1 ms of CPU per request, spooling the part to a temporary file. Any other shape goes
to that parser, fed the same bytes, so its answers and errors are unchanged.
"""

import base64
import binascii
import json
import re
from collections.abc import AsyncIterator

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from fashioncat.photos import ServingError, too_large

from ..core.config import Settings
from ..core.errors import RequestError

_OVERHEAD = 64 * 1024  # multipart headers and JSON around the image
_DIRECT_MAX = 2**20  # bodies up to this size (Starlette's in-memory spool size) are read whole for the direct path
_BOUNDARY = re.compile(rb"(?i:multipart/form-data;[ \t]*boundary=)([0-9A-Za-z'()+_,./:=?-]{1,70})")
_FILE_PART = re.compile(  # the one part: the "file" field with a plain ASCII filename, and at most a Content-Type
    rb'(?i:content-disposition):[ \t]*form-data;[ \t]*name="file";[ \t]*filename="([\x20\x21\x23-\x5b\x5d-\x7e]+)"\r\n'
    rb"(?:(?i:content-type):[ \t]*[!-~][ -~]*\r\n)?\r\n"
)
FILENAME_MAX = 1024  # characters in a file name, on every route and in both body shapes
_HOW = 'send multipart/form-data with the image in a "{field}" file field, or JSON {json_shape}'


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    n = 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise RequestError(
                f"the request body exceeds {limit:,} bytes; send smaller or fewer images", 413, "too_large"
            )
        yield chunk


def _check_length(request: Request, limit: int) -> None:
    cl = request.headers.get("content-length")
    if cl and cl.isdigit() and int(cl) > limit:
        raise RequestError(
            f"the request body is {int(cl):,} bytes; the limit is {limit:,}. Send smaller or fewer images "
            "(e.g. resized to 1000 px on the longest side)",
            413,
            "too_large",
        )


def _b64(s, what: str, max_bytes: int) -> bytes:
    if not isinstance(s, str):
        raise RequestError(f"{what} must be a base64 string")
    if s.startswith("data:") and "," in s:  # a data URL: data:image/png;base64,....
        s = s.split(",", 1)[1]
    if any(c in s for c in " \t\r\n"):  # `base64 photo.jpg` wraps its output at 76 characters
        s = "".join(s.split())
    try:
        data = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(f"{what} is not valid base64 ({e})", 400, "bad_base64") from e
    if len(data) > max_bytes:  # refused before decoding, as a multipart upload is
        raise too_large(len(data), max_bytes)
    return data


def _filename(name, what: str) -> str | None:
    "The file name as given, checked: a string of at most `FILENAME_MAX` characters that encodes as UTF-8."
    if name is None:
        return None
    if not isinstance(name, str):
        raise RequestError(f"{what} must be a string (the image's file name), or left out; got {type(name).__name__}")
    if len(name) > FILENAME_MAX:
        raise RequestError(
            f"{what} is {len(name):,} characters long; the limit is {FILENAME_MAX:,}", 400, "filename_too_long"
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate ("\ud800") from a JSON escape: not a character
        raise RequestError(f"{what} is not valid Unicode text ({e.reason} at position {e.start})") from e
    return name


def _shown(name) -> str | None:
    "A refused file name as a batch item's error entry may echo it: valid text, cut to `FILENAME_MAX`, else None."
    if not isinstance(name, str):
        return None
    return name.encode("utf-8", "replace").decode("utf-8")[:FILENAME_MAX]


async def _form(request: Request, stream: AsyncIterator[bytes], max_files: int, too_many: RequestError):
    try:
        return await MultiPartParser(request.headers, stream, max_files=max_files, max_fields=max_files).parse()
    except MultiPartException as e:
        if e.message.startswith("Too many files"):
            raise too_many from e
        if e.message.startswith("Too many fields"):
            raise RequestError(
                f"more than {max_files} text fields in one form; send the images as file parts, with no other fields"
            ) from e
        hint = " (a part header over 4 KB, such as a very long file name, is refused)" if "Invalid" in e.message else ""
        raise RequestError(f"malformed multipart body: {e.message}{hint}") from e


async def _json(request: Request, limit: int):
    body = b"".join([c async for c in _limited(request, limit)])
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(f"the body is not valid JSON ({e})") from e
    except ValueError as e:  # an integer of more than sys.get_int_max_str_digits() digits (CVE-2020-10735's guard)
        raise RequestError(
            f"the JSON body holds a number too large to read ({e}); send numbers as ordinary values"
        ) from e
    except RecursionError as e:
        raise RequestError("the JSON body is nested too deeply; send a flat object or list") from e


async def _part_bytes(part, max_bytes: int) -> bytes:
    if isinstance(part, UploadFile):
        if part.size is not None and part.size > max_bytes:
            raise too_large(part.size, max_bytes)
        return await part.read()
    raise RequestError(
        'the image field holds text, not a file upload; send the file itself (curl: -F "file=@photo.jpg")'
    )


def single_file(body: bytes, content_type: str) -> tuple[str, bytes] | None:
    """The (filename, bytes) of a multipart body made of exactly one `file` part in the usual shape, else None (the
    general parser then reads it)."""
    m = _BOUNDARY.fullmatch(content_type.encode("latin-1"))
    if m is None:
        return None
    dash = b"--" + m.group(1)
    if not body.startswith(dash + b"\r\n"):
        return None
    part = _FILE_PART.match(body, len(dash) + 2)
    if part is None or len(part.group(1)) > FILENAME_MAX:  # a long name: the general parser's limits and answers
        return None
    end = body.find(b"\r\n" + dash, part.end())
    if end < 0 or body[end + 2 + len(dash) :] not in (b"--", b"--\r\n"):  # a second part, or no closing boundary
        return None
    return part.group(1).decode("ascii"), body[part.end() : end]


async def _body_stream(body: bytes) -> AsyncIterator[bytes]:
    yield body


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def single_limit(s: Settings) -> int:
    "The largest /predict body: one image, base64 in JSON, with the multipart or JSON around it."
    return s.max_bytes * 4 // 3 + _OVERHEAD


async def read_one(request: Request, s: Settings) -> tuple[str | None, bytes]:
    "The (filename, bytes) of the single image in a /predict request."
    how = _HOW.format(field="file", json_shape='{"image_base64": "..."}')
    one = RequestError('/predict takes one image, in one "file" field; send several images to /predict/batch')
    media, limit = media_type(request), single_limit(s)
    _check_length(request, limit)
    if media == "multipart/form-data":
        cl = request.headers.get("content-length", "")
        if cl.isdigit() and int(cl) <= _DIRECT_MAX:
            body = b"".join([c async for c in _limited(request, limit)])
            found = single_file(body, request.headers.get("content-type", ""))
            if found is not None:
                if len(found[1]) > s.max_bytes:
                    raise too_large(len(found[1]), s.max_bytes)
                return _filename(found[0], "the file name"), found[1]
            form = await _form(request, _body_stream(body), 4, one)
        else:
            form = await _form(request, _limited(request, limit), 4, one)
        parts = form.getlist("file")
        if not parts:
            raise RequestError(f'no "file" field (got {sorted(form.keys())}); {how}')
        if len(parts) > 1:
            raise one
        name = _filename(getattr(parts[0], "filename", None), "the file name")
        return name, await _part_bytes(parts[0], s.max_bytes)
    if media == "application/json":
        obj = await _json(request, limit)
        if not isinstance(obj, dict) or "image_base64" not in obj:
            raise RequestError(f'no "image_base64" key in the JSON body; {how}')
        return _filename(obj.get("filename"), '"filename"'), _b64(obj["image_base64"], "image_base64", s.max_bytes)
    raise RequestError(f"unsupported content type {media or 'none'!r}; {how}", 415, "unsupported_media_type")


async def read_many(request: Request, s: Settings) -> list[tuple[str | None, bytes | Exception]]:
    "The (filename, bytes or error) of each image in a /predict/batch request; a bad item does not fail the rest."
    how = _HOW.format(field="files", json_shape='{"images": [{"image_base64": "...", "filename": "..."}, ...]}')
    too_many = RequestError(
        f"more than {s.max_batch} images in one batch; split it into several requests", 413, "too_many_images"
    )
    media, limit = media_type(request), s.max_batch_bytes
    _check_length(request, limit)
    items: list[tuple[str | None, bytes | Exception]] = []
    if media == "multipart/form-data":
        form = await _form(request, _limited(request, limit), s.max_batch + 1, too_many)
        parts = [part for key, part in form.multi_items() if key in ("files", "file")]  # both, in the body's order
        if not parts and form:
            raise RequestError(f'no "files" fields (got {sorted(form.keys())}); {how}')
        for part in parts[: s.max_batch + 1]:
            name = getattr(part, "filename", None)
            try:
                name = _filename(name, "the file name")
                items.append((name, await _part_bytes(part, s.max_bytes)))
            except Exception as e:  # noqa: BLE001 - reported as this item's error
                items.append((_shown(name), e))
    elif media == "application/json":
        obj = await _json(request, limit)
        images = obj.get("images") if isinstance(obj, dict) else obj
        if not isinstance(images, list):
            raise RequestError(f'no "images" list in the JSON body; {how}')
        for i, it in enumerate(images[: s.max_batch + 1]):
            name, data = (it.get("filename"), it.get("image_base64")) if isinstance(it, dict) else (None, it)
            try:
                name = _filename(name, f"images[{i}].filename")
                items.append((name, _b64(data, f"images[{i}].image_base64", s.max_bytes)))
            except ServingError as e:
                items.append((_shown(name), e))
    else:
        raise RequestError(f"unsupported content type {media or 'none'!r}; {how}", 415, "unsupported_media_type")
    if not items:
        raise RequestError(f"the batch is empty; {how}")
    if len(items) > s.max_batch:
        raise too_many
    return items
