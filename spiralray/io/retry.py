"""Retrying storage calls: which failures are transient (throttling, timeouts, dropped
connections, in any of the forms fsspec's stores raise them), and ``retrying(fn)`` with backoff
for idempotent reads and whole-object writes. A corrupt object is not retried."""

from __future__ import annotations

import errno
import time

from ..errors import SpiralrayError

TRANSIENT = (
    "slowdown",
    "reduce your request rate",
    "try again",
    "503",
    "throttl",
    "timeout",
    "timed out",
    "temporar",
    "connection reset",
    "serviceunavailable",
    "requestlimitexceeded",
    "internalerror",
    "too many requests",
    "429",
)


# What fsspec's object stores raise once their own retries are spent: s3fs turns S3's SlowDown,
# 503 and ServiceUnavailable into OSError(EBUSY, "Please reduce your request rate.").
TRANSIENT_ERRNOS = frozenset(
    {errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED}
)


def transient(exc: BaseException) -> bool:
    """Throttling, timeouts and dropped connections are worth retrying; a corrupt chunk is not.
    Read from the error and the errors it was raised from (``raise ... from``)."""
    for _ in range(8):  # a chain is short; the bound guards against a cycle
        if isinstance(exc, (TimeoutError, ConnectionError)) or (
            isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS
        ):
            return True
        # an OSError's own words, without its file name (a path may hold "503" or "timeout")
        said = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        text = f"{exc.__class__.__name__} {said}".lower()
        if any(t in text for t in TRANSIENT):
            return True
        if exc.__cause__ is None:
            return False
        exc = exc.__cause__
    return False


RETRIES = 5  # attempts at a transient failure, backing off 0.2 s, 0.4 s, ... in between


def retrying(fn, attempts: int = RETRIES):
    """``fn()``, called again after a transient failure (``transient``), ``attempts`` times in
    all: for reads and for whole-object writes, which are idempotent. The last failure, or the
    first that is not transient, propagates as raised."""
    for attempt in range(attempts):
        try:
            return fn()
        except SpiralrayError:
            raise
        except Exception as exc:
            if transient(exc) and attempt + 1 < attempts:
                time.sleep(0.2 * 2**attempt)
                continue
            raise
    raise AssertionError("unreachable")
