"""A process-mode Python worker exits when its TaskManager dies: Beam's log handler must not
deadlock on the way out.

When the TaskManager's JVM dies (``kill -9``, the OOM killer), every gRPC stream between it
and the worker breaks, and Beam's fn harness ends: ``SdkHarness.run`` raises and
``sdk_worker_main.main`` closes its ``FnApiLogRecordHandler`` before the process exits.
Beam's ``close`` takes the handler's lock and, holding it, joins the handler's reader thread
(``_read_log_control_messages``). That thread's logging stream broke too, and on that it
prints "Logging client failed: ... resetting" to stderr, which PyFlink's worker main
(``pyflink.fn_execution.beam.beam_sdk_worker_main``) turns into a root-logger record, i.e.
a record for this very handler, whose lock the closing thread holds. When the reader's
stream error comes after ``close`` took the lock (the two streams break together; which
thread runs first decides), each thread waits for the other forever: the worker, its udf
runner shell and ``tee`` stay alive, re-parented, with their memory, their connections to
the subscribers and their CPU claim, until someone kills them. Every other thread that
logs then blocks on the same lock; so did the earlier watchdog (``worker_watchdog``,
reverted), which logged before its ``os._exit``, and that is why it did not end them.
Seen with py-spy in a worker still alive 20 s after its TaskManager's ``kill -9`` (Beam
2.61, PyFlink 2.2): its main thread in ``FnApiLogRecordHandler.close`` -> ``Thread.join``,
the reader in ``Handler.acquire`` under ``print_to_logging``; where the race went the other
way, the worker was gone within 3 s.

``let_worker_exit`` replaces that ``close`` with one that queues the end-of-stream marker
under the lock, as Beam does (no record is queued behind it), and joins the reader after
releasing it, for at most ``READER_JOIN_S``: the reader may log its failure, sees the
handler closing and ends, and the harness exits as it does when the race goes its way.
"""
from __future__ import annotations

import logging
import queue
import sys
from typing import Any

#: How long closing waits for the reader to end (it sends the last records, or gives up
#: on a broken stream within a reconnect pause of 0.5 s); the worker exits after that.
READER_JOIN_S = 10.0

_HARNESS_LOG_HANDLER = "apache_beam.runners.worker.log_handler"


def _close(self: Any) -> None:
    """``FnApiLogRecordHandler.close`` that does not hold the handler's lock while it waits
    for the reader thread (which logs through this handler when its stream fails)."""
    self._alive = False  # the reader stops reconnecting
    try:
        with self.lock:  # no record is queued behind the end-of-stream marker
            self._log_entry_queue.put(self._FINISHED, timeout=5)
    except queue.Full:  # the stream is stuck: the bounded join below ends the wait
        pass
    self._reader.join(READER_JOIN_S)
    logging.Handler.close(self)


_close.knflow_worker_exit = True  # type: ignore[attr-defined]


def let_worker_exit() -> None:
    """Called by every Python operator's ``open``: in a process-mode worker (Beam's fn
    harness is running in this process) make its log handler's ``close`` deadlock-free, so
    the worker exits when its TaskManager is gone. Elsewhere (thread mode: no harness)
    nothing changes. Idempotent."""
    module = sys.modules.get(_HARNESS_LOG_HANDLER)
    if module is None:
        return
    handler_class = module.FnApiLogRecordHandler
    if not getattr(handler_class.close, "knflow_worker_exit", False):
        handler_class.close = _close
        logging.getLogger(__name__).info("Beam's log handler closes without holding its lock while it waits "
                                         "(the worker can exit when its TaskManager dies)")
