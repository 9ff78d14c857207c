"""Ctrl-C during training. Ray Train's trainer catches SIGINT itself: it asks its controller to
abort, then returns, or exits the process (status 1 though it asks for 0), and between two
stages its stale handler can swallow the signal so the next stage trains on. ``fit`` runs a
trainer so that an interrupt always ends as a ``KeyboardInterrupt`` (the CLI's exit 130), and
Ctrl-C outside a ``fit`` is handled as it was before it. SIGTERM (``kill``, a scheduler's stop)
during a ``fit`` is taken as Ctrl-C: the same abort and resume hint, not Ray's stack dumps."""

from __future__ import annotations

import os
import signal
import threading


def fit(trainer):
    """``trainer.fit()``'s result; ``KeyboardInterrupt`` when SIGINT arrived meanwhile."""
    seen = threading.Event()
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main else None
    term = signal.getsignal(signal.SIGTERM) if main else None
    if main:  # kill's SIGTERM as Ctrl-C: Ray's own SIGINT handler aborts the run gracefully
        signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGINT))
    register = getattr(trainer, "_register_sigint_handler", None)  # Ray's own, in fit()
    if register is not None:

        def watched(controller) -> None:
            register(controller)
            theirs = signal.getsignal(signal.SIGINT)

            def handler(signum, frame) -> None:
                seen.set()
                if callable(theirs):
                    theirs(signum, frame)  # Ray's graceful abort

            signal.signal(signal.SIGINT, handler)

        trainer._register_sigint_handler = watched  # the instance's: fit() calls this one
    try:
        result = trainer.fit()
    except SystemExit:  # Ray's handler ends the process this way once its controller is gone
        if seen.is_set():
            raise KeyboardInterrupt from None
        raise
    finally:
        if main and before is not None:  # the handler the caller had, not Ray's stale one
            signal.signal(signal.SIGINT, before)
        if main and term is not None:  # (a handler set outside Python reads as None: ours stays)
            signal.signal(signal.SIGTERM, term)
    if seen.is_set():
        raise KeyboardInterrupt
    return result
