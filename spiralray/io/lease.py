"""One run at a time per output: a lease (``.spiralray/lease.json``) that a run takes before it
writes and renews while it runs.

Two runs on one output (a job submitted twice) would each resume the other's tiles and drop the
other's scratch before its labels were assembled: labels read as empty, marked complete. The
lease refuses the second run with one line. A lease is free when its holder released it, when
its holder is a process on this host that no longer runs (``ray job stop``, a kill), or when it
has not been renewed for ``TTL`` seconds (a holder on another node that died). Object stores
have no atomic create, so a run writes its lease, waits a moment and reads it back: of two runs
that write at once, only the one whose lease stayed goes on.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid

from ..errors import SpiralrayError
from .readers import redact

LEASE = ".spiralray/lease.json"
RENEW = 20.0  # seconds between renewals
TTL = 120.0  # a lease not renewed for this long is a dead holder's
SETTLE = 0.5  # seconds between writing a lease and reading it back


def _alive(pid: int, started: float | None) -> bool:
    """Whether process ``pid`` of this host still runs, and is the one that took the lease (a
    pid can be reused: its start time must match)."""
    try:
        import psutil

        proc = psutil.Process(pid)
        return started is None or abs(proc.create_time() - started) < 2.0
    except ImportError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    except Exception:  # psutil.NoSuchProcess and the like
        return False


def _started() -> float | None:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:
        return None


class Lease:
    """The lease on the output ``out`` (an ``io.output.Output``)."""

    def __init__(self, out):
        self.out = out
        self.token = uuid.uuid4().hex
        self.lost: dict | None = None  # the other holder's lease, once another run took over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _mine(self) -> dict:
        return {
            "token": self.token,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": _started(),
            "renewed": time.time(),
        }

    def holder(self) -> dict | None:
        """The live lease of another run, None when the lease is free or this run's."""
        held = self.out.get_json(LEASE, "lease")
        if not held or held.get("token") == self.token:
            return None
        if held.get("host") == socket.gethostname() and isinstance(held.get("pid"), int):
            return held if _alive(held["pid"], held.get("started")) else None
        return held if time.time() - float(held.get("renewed", 0)) < TTL else None

    def _refuse(self, held: dict) -> None:
        age = max(0, round(time.time() - float(held.get("renewed", 0))))
        elsewhere = held.get("host") != socket.gethostname()  # its death is seen only by age
        raise SpiralrayError(
            f"output {redact(self.out.url)} is in use by another run (host {held.get('host')}, "
            f"pid {held.get('pid')}, renewed {age} s ago): wait for it to finish"
            + (f", or if it was stopped, run again in {max(0, round(TTL - age))} s" if elsewhere else "")
        )

    def acquire(self) -> None:
        held = self.holder()
        if held:
            self._refuse(held)
        self.out.put_json(LEASE, self._mine())
        time.sleep(SETTLE)
        now = self.out.get_json(LEASE, "lease") or {}
        if now.get("token") != self.token:  # another run wrote its lease at the same moment
            self._refuse(now)
        self._thread = threading.Thread(target=self._renew, name="spiralray-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW):
            try:
                now = self.out.get_json(LEASE, "lease") or {}
                if now.get("token") not in (None, self.token):
                    self.lost = now
                    return
                self.out.put_json(LEASE, self._mine())
            except Exception:  # a storage hiccup: the next renewal tries again, well inside TTL
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            now = self.out.get_json(LEASE, "lease") or {}
            if now.get("token") == self.token:
                self.out.delete(LEASE)
        self.out.remove_empty()  # a run refused before it wrote leaves no folder behind


@contextlib.contextmanager
def leased(out):
    """Hold the lease on ``out`` (an ``io.output.Output``) for the block; refused (one line) while
    another run holds it. A run whose lease another took over (after ``TTL`` without renewal:
    a process frozen that long) ends in an error, not a "complete" it cannot vouch for."""
    lease = Lease(out)
    lease.acquire()
    try:
        yield lease
    finally:
        lease.release()
    if lease.lost:
        raise SpiralrayError(
            f"output {redact(out.url)} was taken over by another run (host {lease.lost.get('host')}, "
            f"pid {lease.lost.get('pid')}) while this one ran: run again with --overwrite once it ends"
        )
