"""Ctrl-C during training. Ray Train's trainer catches SIGINT itself: it asks its controller to
abort, then returns, or exits the process (status 1 though it asks for 0), and between two
stages its stale handler can swallow the signal so the next stage trains on. ``fit`` runs a
trainer so that an interrupt always ends as a ``KeyboardInterrupt`` (the CLI's exit 130), and
Ctrl-C outside a ``fit`` is handled as it was before it."""

from __future__ import annotations

import signal
import threading


def fit(trainer):
    """``trainer.fit()``'s result; ``KeyboardInterrupt`` when SIGINT arrived meanwhile."""
    seen = threading.Event()
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main else None
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
    if seen.is_set():
        raise KeyboardInterrupt
    return result
