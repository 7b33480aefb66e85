"""Structured JSON logs: one line per request on the `fashioncat.access` logger, app events on `fashioncat`."""

import json
import logging
import sys
import time

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    "One JSON object per line: time, level, logger, message and the record's extra fields."

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(level: str = "INFO") -> None:
    "Send `fashioncat*` loggers to stderr as JSON; silence uvicorn's access log, which the request log replaces."
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    log = logging.getLogger("fashioncat")
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False
    logging.getLogger("uvicorn.access").disabled = True
    # Fields no line here prints (JSONFormatter drops them): the logging HOWTO's "Optimization" switches, which spare
    # every record a stack walk and the thread and process look-ups.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


access_log = logging.getLogger("fashioncat.access")
app_log = logging.getLogger("fashioncat.app")
