"""gunicorn settings for the web container, from the environment.

Threaded workers: a request, a CSV download to a slow client included, holds one
thread, not a whole process, for as long as it takes. The arbiter's ``timeout`` watches
each process's main loop, which keeps beating while its threads send files, so a
download may last far longer than ``timeout``. README, Production: "The web server".
"""

import contextlib
import os
import socket

from gunicorn import util

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# A process accepts only as many connections as it has threads. One whose threads are
# all busy (with downloads, say) leaves new connections to the others instead of
# queueing them behind transfers that may last minutes. So connections are not kept
# alive: each finished response frees its slot for the next connection.
worker_connections = threads
keepalive = 0
# A process whose main loop is silent this long is restarted; a connection that moves
# no byte this long (a client that stopped reading a download) is closed.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = 30
accesslog = "-"
errorlog = "-"


def _socket_of(req):
    """The client socket of an HTTP/1 request (None for HTTP/2 streams)."""
    return getattr(getattr(req, "unreader", None), "sock", None)


def pre_request(worker, req):
    """Bound every blocking send and receive of this request by ``timeout``.

    gthread sockets block without a timeout: a client that stops reading a download
    would hold its thread forever. With one, ``socket.sendfile`` gives up once the
    client has taken no byte for ``timeout`` seconds.
    """
    sock = _socket_of(req)
    if sock is not None and worker.cfg.timeout:
        sock.settimeout(worker.cfg.timeout)


def post_request(worker, req, environ, resp):
    """Wait for the client to close a finished connection in the thread that served it.

    gthread closes connections on the process's main loop, first waiting up to 2 s for
    the client to close its side. After a download the client may still be reading
    the last buffered megabytes: a few such waits in a row stall accepting and the
    heartbeat, and the arbiter kills the process with all its downloads. Waiting here
    holds only this request's thread; gunicorn's own close then has nothing left to
    wait for. Errors before any byte was sent are left to gunicorn, which answers them.
    """
    sock = _socket_of(req)
    if sock is None or resp is None or not resp.headers_sent or not resp.should_close():
        return
    with contextlib.suppress(OSError):
        # FIN after the last byte, drain until the client's FIN (2 s at most); the
        # duplicate is closed, the connection stays open for gunicorn to close.
        util.close_graceful(socket.socket(fileno=os.dup(sock.fileno())))
        sock.shutdown(socket.SHUT_RD)


def on_starting(server):
    """Run Django's system checks before serving, as the worker does: an unsafe data
    source (README: Security) keeps the web from starting, with the reason."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reportsvc.settings")
    import django
    from django.core.management import call_command
    from django.db import connections

    django.setup()
    try:
        call_command("check")
    finally:
        connections.close_all()  # the workers fork from here: no shared sockets
