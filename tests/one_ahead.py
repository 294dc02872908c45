"""Start a module's next server while the current one's tests run (tests only).

A CPU server's start (~30 s) is mostly single-threaded imports, and a server test mostly keeps
one core busy: overlapping the two saves most of every start but the first.
"""

from __future__ import annotations

from contextlib import contextmanager

# A CPU server of a tiny checkpoint holds ~2.5 GiB over its processes (two ranks: twice that).
# Two test workers each keep a session server and a module's servers up: a server is started
# ahead only with this much memory free, so that the 24 GiB machines never run out; otherwise it
# starts when its tests need it.
AHEAD_MIN_AVAILABLE = 9 << 30


def room_for_a_server() -> bool:
    import psutil

    return psutil.virtual_memory().available >= AHEAD_MIN_AVAILABLE


def module_keys(request, fixture: str | None = None, then=()) -> list:
    """In the order this session runs them, the servers the requesting module's tests use: the
    param index of each param of `fixture` they use, and the name of each test in `then`."""
    keys = []
    for item in request.session.items:
        if getattr(item, "module", None) is not request.module:
            continue
        spec = getattr(item, "callspec", None)
        key = spec.indices.get(fixture) if spec and fixture else None
        if key is None and item.originalname in then:
            key = item.originalname
        if key is not None and key not in keys:
            keys.append(key)
    return keys


class OneAhead:
    """A module's servers, each started as the one before it is handed over.

    `start(key)` launches one without waiting for it and returns `(server, *extras)`, or None
    where the test uses a server from elsewhere (the session server); `take(key)` hands that
    over (starting it if nobody has) and starts the next key of `module_keys`. Build it in a
    module-scoped fixture of its own and `stop()` it at that fixture's teardown: a server started
    ahead for a test that then never ran is stopped there.
    """

    def __init__(self, request, start, fixture: str | None = None, then=()):
        self.start, self.pending = start, {}
        self.order = module_keys(request, fixture, then)

    def start_first(self) -> None:
        """Start the first server now (a module whose first tests use the session server)."""
        if self.order and self.order[0] not in self.pending:
            self.pending[self.order[0]] = self.start(self.order[0])

    def take(self, key) -> tuple | None:
        started = self.pending.pop(key) if key in self.pending else self.start(key)
        later = self.order[self.order.index(key) + 1:] if key in self.order else []
        if later and later[0] not in self.pending and room_for_a_server():
            self.pending[later[0]] = self.start(later[0])
        return started

    @contextmanager
    def serving(self, key, timeout: float = 600):
        """`take(key)`, wait until its server is ready, yield `(server, *extras)`, stop it."""
        started = self.take(key)
        try:
            started[0].wait_ready(timeout=timeout)
            yield started
        finally:
            started[0].stop()

    def stop(self) -> None:
        for started in self.pending.values():
            if started is not None:
                started[0].stop()
        self.pending.clear()
