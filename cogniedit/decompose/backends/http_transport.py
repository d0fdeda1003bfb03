"""One HTTP POST with a wall-clock deadline and a cancel check, redirects never followed.

urllib's timeout bounds each socket read, not the request: a server that sends its headers and then a
byte every half second keeps it waiting for as long as it likes, and nothing can interrupt it. Here the
exchange runs on a worker thread while the caller's thread watches the deadline and the cancel check;
either one shuts the socket down (which ends the worker's blocking read) and raises at once.

Redirects are refused rather than followed: a server must not be able to send the Authorization
header, or the image, on to an address nobody configured. Proxies from the environment (HTTP_PROXY,
HTTPS_PROXY, NO_PROXY) are honoured as urllib would.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.parse
import urllib.request

from .base import CancelCheck, Cancelled, never_cancelled

POLL_S = 0.05  # how often the waiting thread looks at the deadline and the cancel check


class DeadlineExceeded(TimeoutError):
    pass


class _Exchange:
    def __init__(self, url: str, data: bytes, headers: dict, timeout_s: float, max_bytes: int):
        parts = urllib.parse.urlsplit(url)
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        proxy = urllib.request.getproxies().get(parts.scheme)
        if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
            cls = http.client.HTTPSConnection if secure else http.client.HTTPConnection
            self.connection = cls(parts.hostname, port, timeout=timeout_s)
        else:
            via = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            if secure:  # CONNECT through the proxy, then TLS with the server itself
                self.connection = http.client.HTTPSConnection(via.hostname, via.port or 8080, timeout=timeout_s)
                self.connection.set_tunnel(parts.hostname, port)
            else:  # plain http: the proxy gets the full URL in the request line
                self.connection = http.client.HTTPConnection(via.hostname, via.port or 8080, timeout=timeout_s)
                self.path = url
        self.data, self.headers, self.max_bytes = data, headers, max_bytes
        self.done, self.aborted = threading.Event(), threading.Event()
        self.sock = None  # kept here: http.client drops connection.sock once a reply says "Connection: close"
        self.reply: tuple[int, bytes, str] | None = None
        self.error: BaseException | None = None

    def run(self):
        try:
            self.connection.connect()
            self.sock = self.connection.sock
            if self.aborted.is_set():  # the caller gave up while we were connecting
                self.abort()
                return
            self.connection.request("POST", self.path, body=self.data, headers=self.headers)
            response = self.connection.getresponse()
            location = response.getheader("Location", "")
            payload = response.read(self.max_bytes + 1)
            self.reply = (response.status, payload, location)
        except BaseException as error:  # handed to the waiting thread
            self.error = error
        finally:
            self.done.set()

    def abort(self):
        self.aborted.set()
        sock = self.sock
        if sock is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # wakes the worker's blocking recv
            except OSError:
                pass
        self.connection.close()
        if sock is not None:
            sock.close()


def post(url: str, data: bytes, headers: dict, deadline: float, cancel: CancelCheck | None = None,
         max_bytes: int = 1 << 20) -> tuple[int, bytes, str]:
    """(status, body (at most max_bytes + 1 bytes), Location header) by `deadline` (time.monotonic())."""
    cancel = cancel or never_cancelled
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceeded()
    exchange = _Exchange(url, data, headers, remaining, max_bytes)
    threading.Thread(target=exchange.run, name="cogniedit-http", daemon=True).start()
    while not exchange.done.wait(POLL_S):
        if cancel():
            exchange.abort()
            raise Cancelled(f"cancelled while waiting for {url}")
        if time.monotonic() >= deadline:
            exchange.abort()
            raise DeadlineExceeded()
    exchange.abort()  # closes the socket even when the reply was cut at max_bytes
    if exchange.error is not None:
        raise exchange.error
    return exchange.reply


def sleep_unless_cancelled(seconds: float, cancel: CancelCheck | None = None):
    """time.sleep in short steps; raises Cancelled as soon as `cancel` says so."""
    cancel = cancel or never_cancelled
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if cancel():
            raise Cancelled("cancelled while waiting to retry")
        time.sleep(min(left, 0.1))
