"""One webhook POST: bounded in time, never redirected, never to a blocked address.

- ``NOTIFY_WEBHOOK_TIMEOUT_SECONDS`` bounds the whole attempt: the DNS lookup, the
  connection, the TLS handshake, sending the request and reading the response. Every
  socket operation gets only the time left (a receiver that answers one byte a second
  is cut off like one that never answers).
- The host name is resolved once, every address it resolves to is checked against
  ``NOTIFY_WEBHOOK_BLOCKED_NETWORKS``, and the connection goes to a checked address:
  a second lookup (DNS rebinding) never happens. TLS still verifies the certificate
  against the host name of the URL.
- Redirects are not followed: a 3xx answer fails the delivery and says where it
  pointed (host only).
- Messages never contain the URL's user, password, path or query.
"""

import base64
import http.client
import socket
import ssl
import threading
import time
import urllib.parse

from runs.services.notifications.channels.addresses import blocked_network_of

RESPONSE_BYTES_READ = 1024  # of the body: enough to see the receiver finished answering
REASON_MAX_CHARS = 100
_PATH_SAFE = "/%:@!$&'()*+,;=?~[]"


class WebhookFailed(Exception):
    """An attempt failed; ``retry`` says whether asking again may help."""

    def __init__(self, message, *, retry, retry_after=None, answer=""):
        super().__init__(message)
        self.retry = retry
        self.retry_after = retry_after  # seconds, from a 429's Retry-After
        self.answer = answer  # the start of the body, printable characters only


class Deadline:
    def __init__(self, seconds):
        self.seconds = seconds
        self._at = time.monotonic() + seconds

    def remaining(self):
        left = self._at - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out after {self.seconds:g} s")
        return left


def post_webhook(url, body, headers, *, timeout, allowed_host=None):
    """POST ``body`` to ``url`` once; return the 2xx status or raise WebhookFailed.

    ``allowed_host`` (a function of the URL's scheme, host and port returning why it is
    refused, or None) replaces the blocked-network check: Slack and Teams targets go to a
    fixed list of hosts."""
    deadline = Deadline(timeout)
    parts = urllib.parse.urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not host:
        raise WebhookFailed("not an http(s) URL", retry=False)
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise WebhookFailed("invalid port in the URL", retry=False) from None
    headers = dict(headers)
    if parts.username is not None:
        credentials = f"{urllib.parse.unquote(parts.username)}:"
        credentials += urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    target = urllib.parse.quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + urllib.parse.quote(parts.query, safe=_PATH_SAFE)
    if allowed_host is not None:
        refused = allowed_host(scheme, host, parts.port)
        if refused:
            raise WebhookFailed(refused, retry=False)
    try:
        addresses = checked_addresses(host, port, deadline, check=allowed_host is None)
        connection_class = PinnedHTTPSConnection if scheme == "https" else PinnedHTTPConnection
        connection = connection_class(host, port, addresses, deadline)
        try:
            connection.request("POST", target, body=body, headers=headers)
            response = connection.getresponse()
            status, reason = response.status, response.reason
            location = response.getheader("Location")
            retry_after = response.getheader("Retry-After")
            answer = response.read(RESPONSE_BYTES_READ)
        finally:
            connection.close()
    except WebhookFailed:
        raise
    except TimeoutError:
        raise WebhookFailed(f"timed out after {timeout:g} s", retry=True) from None
    except ssl.SSLCertVerificationError as error:
        message = f"TLS certificate not accepted: {error.verify_message}"
        raise WebhookFailed(message, retry=False) from None
    except ssl.SSLError as error:
        raise WebhookFailed(f"TLS error: {error.reason or error}", retry=True) from None
    except (http.client.InvalidURL, UnicodeError):
        raise WebhookFailed("invalid URL", retry=False) from None
    except http.client.RemoteDisconnected:
        raise WebhookFailed("connection closed without a response", retry=True) from None
    except http.client.HTTPException as error:
        message = f"not a valid HTTP response ({type(error).__name__})"
        raise WebhookFailed(message, retry=True) from None
    except OSError as error:
        raise WebhookFailed(_describe_os_error(error), retry=True) from None
    return _judge(url, status, reason, location, retry_after, answer)


def _seconds(value):
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if 0 <= seconds < 1e9 else None


def _judge(url, status, reason, location, retry_after=None, answer=b""):
    if 200 <= status < 300:
        return status
    if 300 <= status < 400:
        if not location:
            message = f"redirect not followed, {status} without a Location"
        else:
            try:
                to = urllib.parse.urlsplit(urllib.parse.urljoin(url, location)).hostname
            except ValueError:
                to = None
            message = f"redirect not followed, {status} to {to or 'an invalid location'}"
        raise WebhookFailed(message, retry=False)
    reason = "".join(c for c in reason if c.isprintable())[:REASON_MAX_CHARS]
    answer = answer.decode("utf-8", "replace")
    answer = "".join(c for c in answer if c.isprintable())[:REASON_MAX_CHARS]
    raise WebhookFailed(
        f"HTTP {status} {reason}".rstrip(),
        retry=status >= 500 or status == 429,
        retry_after=_seconds(retry_after) if status == 429 else None,
        answer=answer,
    )


def _describe_os_error(error):
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    return error.strerror or type(error).__name__


# --- resolving and checking the address ----------------------------------------------


def resolve(host, port):
    """``getaddrinfo`` for a TCP connection (its own function: tests stand in for DNS)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)


def checked_addresses(host, port, deadline, check=True):
    """The addresses ``host`` resolves to, once, within the deadline; WebhookFailed if
    any of them is in a blocked network (unless not ``check``: an allowed host)."""
    found, done = {}, threading.Event()

    def look_up():
        try:
            found["addresses"] = resolve(host, port)
        except (OSError, UnicodeError) as error:
            found["error"] = error
        finally:
            done.set()

    # A daemon thread: a resolver that hangs must not hold the attempt (or the worker).
    threading.Thread(target=look_up, name="webhook-dns", daemon=True).start()
    if not done.wait(deadline.remaining()):
        raise TimeoutError
    if "error" in found:
        error = found["error"]
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise WebhookFailed(f"cannot resolve {host}: {reason}", retry=True)
    addresses = found["addresses"]
    for *_, sockaddr in addresses if check else ():
        network = blocked_network_of(sockaddr[0])
        if network is not None:
            where = sockaddr[0] if sockaddr[0] == host else f"{host} ({sockaddr[0]})"
            raise WebhookFailed(
                f"refused: {where} is in the blocked network {network} "
                "(NOTIFY_WEBHOOK_BLOCKED_NETWORKS)",
                retry=False,
            )
    if not addresses:
        raise WebhookFailed(f"cannot resolve {host}: no address", retry=True)
    return addresses


# --- sockets that give every operation only the time left ----------------------------


class _DeadlineMixin:
    deadline = None

    def _arm(self):
        if self.deadline is not None:
            self.settimeout(self.deadline.remaining())

    def recv(self, *args):
        self._arm()
        return super().recv(*args)

    def recv_into(self, *args):
        self._arm()
        return super().recv_into(*args)

    def send(self, *args):
        self._arm()
        return super().send(*args)

    def sendall(self, *args):
        self._arm()
        return super().sendall(*args)


class DeadlineSocket(_DeadlineMixin, socket.socket):
    pass


class DeadlineSSLSocket(_DeadlineMixin, ssl.SSLSocket):
    pass


_tls = threading.local()


def _tls_context():
    """The system's default TLS settings; one context per thread, made once."""
    context = getattr(_tls, "context", None)
    if context is None:
        context = ssl.create_default_context()
        context.sslsocket_class = DeadlineSSLSocket
        _tls.context = context
    return context


def connect_checked(addresses, deadline):
    """A socket connected to the first of ``addresses`` that answers in time."""
    error = None
    for family, kind, protocol, _, sockaddr in addresses:
        sock = DeadlineSocket(family, kind, protocol)
        try:
            sock.settimeout(deadline.remaining())
            sock.connect(sockaddr)
        except OSError as failure:
            sock.close()
            error = failure
            continue
        sock.deadline = deadline
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise error


class PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to checked addresses, never to whatever the name resolves to now."""

    def __init__(self, host, port, addresses, deadline):
        super().__init__(host, port, timeout=deadline.seconds)
        self._addresses, self._deadline = addresses, deadline

    def connect(self):
        self.sock = connect_checked(self._addresses, self._deadline)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to checked addresses; the certificate must match the URL's host name."""

    def __init__(self, host, port, addresses, deadline):
        super().__init__(host, port, timeout=deadline.seconds, context=_tls_context())
        self._addresses, self._deadline = addresses, deadline

    def connect(self):
        sock = connect_checked(self._addresses, self._deadline)
        try:
            sock.settimeout(self._deadline.remaining())  # the handshake as a whole
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock.deadline = self._deadline
