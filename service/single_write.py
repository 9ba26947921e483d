"""Send a response's status line and headers in the same write as its first body bytes.

Why: gunicorn (27) writes the head of a response in one `sendall` and the body in another. A
replica killed between the two (a `docker kill`, an OOM kill, a node lost) leaves the proxy in
front holding a status and headers it has already forwarded: it cannot retry the request on
another replica, and the client gets a truncated body. With both in one write, a replica either
sent the whole (small) response or nothing, and a proxy retries "nothing" safely. Measured on a
3-replica stack (see docs/deployment.md): about 1 request lost in 57 kills before, 0 after.

How: `install()` patches three methods of `gunicorn.http.wsgi.Response`, in the worker process
(`post_worker_init` in service/gunicorn.conf.py). While `write()` runs for the first time, the
head is kept instead of sent, and `_emit_body()` sends it joined with the (framed) body bytes.
Everything else (sendfile, HEAD and 204 answers, empty bodies, later chunks) goes out as before:
a head still pending after `write()` returns is flushed at once, so nothing is ever held back.
"""

from __future__ import annotations

from typing import Any

from gunicorn import util
from gunicorn.http import wsgi

_PENDING = "_rnnadd_pending_head"  # head bytes not yet sent, on the Response instance
_DEFER = "_rnnadd_defer_head"  # true while the first write() runs


def _head(resp: Any) -> bytes:
    """The status line and headers exactly as gunicorn's send_headers() builds them."""
    lines = resp.default_headers()
    lines.extend(f"{name}: {value}\r\n" for name, value in resp.headers)
    return util.to_bytestring("{}\r\n".format("".join(lines)), "latin-1")


def _flush(resp: Any) -> None:
    """Send a head that no body bytes came to carry (empty or dropped body)."""
    head = resp.__dict__.pop(_PENDING, None)
    if head:
        util.write(resp.sock, head)


def install() -> bool:
    """Patch gunicorn's Response in this process; False when it was patched already."""
    cls = wsgi.Response
    if getattr(cls, "_rnnadd_single_write", False):
        return False
    send_headers, write, emit_body = cls.send_headers, cls.write, cls._emit_body

    def patched_send_headers(self: Any) -> None:
        if self.headers_sent or not self.__dict__.get(_DEFER):
            send_headers(self)
            return
        self.__dict__[_PENDING] = _head(self)
        self.headers_sent = True

    def patched_emit_body(self: Any, data: bytes) -> None:
        head = self.__dict__.pop(_PENDING, None)
        if head is None:
            emit_body(self, data)
        elif self.chunked:
            util.write(self.sock, b"".join((head, b"%X\r\n" % len(data), data, b"\r\n")))
        else:
            util.write(self.sock, head + data)

    def patched_write(self: Any, arg: bytes) -> None:
        if self.headers_sent:
            write(self, arg)
            return
        self.__dict__[_DEFER] = True
        try:
            write(self, arg)
        finally:
            self.__dict__[_DEFER] = False
            _flush(self)

    cls.send_headers = patched_send_headers
    cls._emit_body = patched_emit_body
    cls.write = patched_write
    cls._rnnadd_single_write = True
    return True
