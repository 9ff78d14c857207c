"""One run at a time per output: a lease (``.spiralray/lease.json``) that a run takes before it
writes and renews while it runs.

Two runs on one output (a job submitted twice) would each resume the other's tiles and drop the
other's scratch before its labels were assembled: labels read as empty, marked complete. The
lease refuses the second run with one line. A lease is free when its holder released it, when
it has not been renewed for ``TTL`` seconds (a holder on another node that died, or one frozen),
or when its holder is a process of this machine (same boot, same process namespace) that no
longer runs (``ray job stop``, a kill). Object stores have no atomic create, so a run writes its
lease, waits a moment and reads it back: of two runs that write at once, only the one whose lease
stayed goes on. Before its irreversible steps (labels assembled, ``complete`` written, scratch
dropped) a run reads its lease again (``verify``): one whose lease another run took stops there.
An archive run's lease is on its output root and a one-image run's on its image's output, so
each also looks at the other's: a one-image run at the folders above its output, an archive run
at each image output it is about to write (``check_free``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid

from ..errors import SpiralrayError
from .readers import is_url, local, redact

LEASE = ".spiralray/lease.json"
RENEW = 20.0  # seconds between renewals
TTL = 120.0  # a lease not renewed for this long is a dead (or frozen) holder's
SETTLE = 0.5  # seconds between writing a lease and reading it back
FRESH = 5.0  # a verify this soon after a read that found the lease this run's reads nothing:
# another run can take it only once it has gone unrenewed for TTL
_ACTIVE: dict[str, Lease] = {}  # this process's leases by output URL (``verify``)


def _machine() -> str:
    """This host, boot and process namespace: where a pid names the same process (containers
    sharing a hostname do not share pids)."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        with open("/proc/sys/kernel/random/boot_id") as f:
            parts.append(f.read().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return "/".join(parts)


def _alive(pid: int, started: float | None) -> bool:
    """Whether process ``pid`` of this machine still runs, and is the one that took the lease
    (a pid can be reused: its start time must match; a zombie has ended)."""
    try:
        import psutil

        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
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
        self._created = False  # the output folder was made by this lease (removed if left empty)
        self._made: list[str] = []  # local folders above it that it made too, nearest first
        self._seen = float("-inf")  # when a read last found this run's lease (time.monotonic)

    def _mine(self) -> dict:
        return {
            "token": self.token,
            "host": socket.gethostname(),
            "machine": _machine(),
            "pid": os.getpid(),
            "started": _started(),
            "renewed": time.time(),
        }

    def holder(self) -> dict | None:
        """The live lease of another run, None when the lease is free or this run's."""
        held = self.out.get_json(LEASE, "lease")
        if not isinstance(held, dict) or not held or held.get("token") == self.token:
            return None  # none, or not a lease (a damaged file): nothing to wait for
        if time.time() - _renewed(held) >= TTL:
            return None
        if held.get("machine") == _machine() and isinstance(held.get("pid"), int):
            return held if _alive(held["pid"], held.get("started")) else None
        return held

    def _refuse(self, held: dict) -> None:
        age = max(0, round(time.time() - _renewed(held)))
        here = held.get("machine") == _machine()  # elsewhere, its death is seen only by age
        where = f" is inside {redact(held['at'])}, which" if "at" in held else ""
        raise SpiralrayError(
            f"output {redact(self.out.url)}{where} is in use by another run (host {held.get('host')}, "
            f"pid {held.get('pid')}, renewed {age} s ago): wait for it to finish"
            + ("" if here else f", or if it was stopped, run again in {max(0, round(TTL - age))} s")
        )

    def acquire(self, above: bool = False) -> None:
        """Take the lease; with ``above``, also refused while a run holds a folder holding the
        output (an archive run's output root), looked for once this lease is written: of two
        runs starting together, one sees the other."""
        held = self.holder()
        if held:
            self._refuse(held)
        self._created = not self.out.exists()
        self._made = _missing_folders(self.out.url)  # a refused run leaves none of them behind
        self.out.put_json(LEASE, self._mine())
        try:
            time.sleep(SETTLE)
            now = self.out.get_json(LEASE, "lease") or {}
            if now.get("token") != self.token:  # another run wrote its lease at the same moment
                self._refuse(now)
            self._seen = time.monotonic()
            held = _held_above(self.out) if above else None
            if held:
                self._refuse(held)
        except BaseException:  # refused, interrupted or failed here: leave no lease behind
            self._stop.set()
            self.release()
            raise
        self._thread = threading.Thread(target=self._renew, name="spiralray-lease", daemon=True)
        self._thread.start()
        _ACTIVE[self.out.url] = self

    def _renew(self) -> None:
        while not self._stop.wait(RENEW):
            try:
                now = self.out.get_json(LEASE, "lease") or {}
                if now.get("token") not in (None, self.token):
                    self.lost = now
                    return
                if not self._stop.is_set():  # released meanwhile: a late write would revive it
                    self.out.put_json(LEASE, self._mine())
            except Exception:  # a storage hiccup: the next renewal tries again, well inside TTL
                continue

    def verify(self) -> None:
        """Raise if another run has taken this lease (read afresh, not only the last renewal)."""
        if self.lost is None and time.monotonic() - self._seen > FRESH:  # an image's last steps
            now = self.out.get_json(LEASE, "lease") or {}  # follow each other: one read for all
            if now.get("token") not in (None, self.token):
                self.lost = now
            else:
                self._seen = time.monotonic()
        if self.lost is not None:
            raise SpiralrayError(
                f"output {redact(self.out.url)} was taken over by another run (host "
                f"{self.lost.get('host')}, pid {self.lost.get('pid')}) while this one ran: this run "
                "stops before finishing it; run again with --overwrite once that run ends"
            )

    def release(self) -> None:
        _ACTIVE.pop(self.out.url, None)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)  # a renewal in flight ends before the lease is deleted
        with contextlib.suppress(Exception):
            now = self.out.get_json(LEASE, "lease") or {}
            if now.get("token") == self.token:
                self.out.delete(LEASE)
        # a run refused before it wrote leaves no folder behind (one the user made stays)
        self.out.remove_empty(root=self._created)
        for folder in self._made:
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def verify(url: str) -> None:
    """Before an irreversible step on the output at ``url``: raise if the lease this process
    holds on it (or on the archive output holding it) was taken by another run. Nothing held:
    nothing to check (a direct API call)."""
    u = str(url).rstrip("/")
    for root, lease in list(_ACTIVE.items()):
        if u == root or u.startswith(root.rstrip("/") + "/"):
            lease.verify()


def check_free(out) -> None:
    """Raise (one line) while another run holds a lease on ``out``: an archive run's check of an
    image output a one-image run may be writing."""
    lease = Lease(out)
    held = lease.holder()
    if held:
        lease._refuse(held)


def _renewed(held: dict) -> float:
    """A lease's renewal time; 0 (long expired) where the file does not give a number."""
    try:
        return float(held.get("renewed", 0))
    except (TypeError, ValueError):
        return 0.0


def _missing_folders(url: str) -> list[str]:
    """The local folders above output ``url`` that do not exist yet, nearest first."""
    if is_url(url):
        return []  # object stores have no folders
    return [d for d in _above(url) if not os.path.exists(d)]


def _above(url: str) -> list[str]:
    """The folders holding ``url``, nearest first, up to the bucket (or below the filesystem's
    root): where an archive run holding this output may keep its lease."""
    if is_url(url):
        scheme, _, path = url.partition("://")
        parts = path.strip("/").split("/")
        return [f"{scheme}://{'/'.join(parts[:n])}" for n in range(len(parts) - 1, 0, -1)]
    parts = os.path.abspath(local(url)).strip("/").split("/")
    return ["/" + "/".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)]


def _held_above(out) -> dict | None:
    """The live lease of a run on a folder holding ``out``, with its URL under ``"at"``."""
    for url in _above(out.url):
        try:
            held = Lease(type(out)(url, out.storage_options)).holder()
        except SpiralrayError:  # a folder this run may not read (a bucket's other prefixes)
            continue
        if held:
            return {**held, "at": url}
    return None


@contextlib.contextmanager
def leased(out, above: bool = False):
    """Hold the lease on ``out`` (an ``io.output.Output``) for the block; refused (one line) while
    another run holds it, or with ``above`` a folder holding it (an archive run's output root).
    A run whose lease another took (after ``TTL`` without renewal: a process frozen that long)
    stops at its next ``verify``, and at the block's end."""
    lease = Lease(out)
    lease.acquire(above)
    try:
        yield lease
    finally:
        lease.release()
    if lease.lost:
        lease.verify()
