"""The asyncio event loop that deliveries run on: uvloop (default) or asyncio's own.

Delivery is one HTTP request per (event, trigger), so the loop's per-request cost counts:
with pyreqwest on one core, uvloop carries about 1.4x the requests of asyncio's default
loop (``bench/delivery.py``). Both runners take the loop from here:

- Beam's delivery DoFn creates its loop with ``new_event_loop``;
- PyFlink's async operator creates its own loop (``asyncio.new_event_loop`` in its runner
  thread, after the function's ``open``), so the Flink function installs the loop policy
  with ``install_policy`` in ``open``. The Python worker runs only this job, so a
  process-wide policy touches nothing else.

``--event-loop asyncio`` selects asyncio's loop (for asyncio's debug mode, say).
"""
from __future__ import annotations

import asyncio

from filters.errors import KnflowError

__all__ = ["DEFAULT_EVENT_LOOP", "EVENT_LOOPS", "install_policy", "new_event_loop"]

EVENT_LOOPS = ("uvloop", "asyncio")
DEFAULT_EVENT_LOOP = "uvloop"


def _policy(name: str) -> asyncio.AbstractEventLoopPolicy:
    if name == "uvloop":
        import uvloop

        return uvloop.EventLoopPolicy()
    if name == "asyncio":
        return asyncio.DefaultEventLoopPolicy()
    raise KnflowError(f"--event-loop {name!r}: expected one of {', '.join(EVENT_LOOPS)}")


def new_event_loop(name: str = DEFAULT_EVENT_LOOP) -> asyncio.AbstractEventLoop:
    """A new loop of the named kind, without touching the process-wide policy."""
    return _policy(name).new_event_loop()


def install_policy(name: str = DEFAULT_EVENT_LOOP) -> None:
    """Make ``asyncio.new_event_loop()`` create loops of the named kind in this process."""
    asyncio.set_event_loop_policy(_policy(name))
