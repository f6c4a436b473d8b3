"""A local server that behaves like Slack's and Teams' endpoints, for tests.

One origin serves them all (point NOTIFY_CHAT_TEST_ORIGIN at ``server.origin``):

- ``POST /services/…``: a Slack incoming webhook; answers ``ok``, or what ``webhook``
  answers are queued (``(status, body, headers)``), e.g. 404 ``no_service``.
- ``POST /api/<method>``: Slack's Web API as slack-sdk calls it: ``chat.postMessage``,
  ``files.getUploadURLExternal`` (an upload URL on this server),
  ``files.completeUploadExternal``; ``auth.test``. A token in ``revoked`` gets
  ``token_revoked``; queued ``api`` answers come first (e.g. a 429 with Retry-After).
- ``POST /upload/<file id>``: the upload URL; keeps the bytes.
- ``POST /workflows/…``: a Teams Workflows webhook; answers 202 Accepted.

Every request is recorded: ``(path, headers, body bytes)``; ``calls`` lists the Web API
methods in order.
"""

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    def __init__(self, delay=0.0):
        self.requests, self.calls, self.uploads = [], [], {}
        self.webhook, self.api, self.teams = [], [], []  # queued answers
        self.revoked, self.delay = set(), delay
        self.slow_paths = {}  # path prefix -> seconds to wait before answering
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                server.requests.append((self.path, dict(self.headers), body))
                time.sleep(server.delay)
                for prefix, seconds in server.slow_paths.items():
                    if self.path.startswith(prefix):
                        time.sleep(seconds)
                path = urllib.parse.urlsplit(self.path).path
                if path.startswith("/services/"):
                    self.answer(*(server.webhook.pop(0) if server.webhook else (200, "ok")))
                elif path.startswith("/workflows/"):
                    self.answer(*(server.teams.pop(0) if server.teams else (202, "")))
                elif path.startswith("/upload/"):
                    server.uploads[path.rsplit("/", 1)[1]] = body
                    self.answer(200, f"OK - {len(body)}")
                elif path.startswith("/api/"):
                    self.web_api(path[len("/api/") :], body)
                else:
                    self.answer(404, "not found")

            def web_api(self, method, body):
                server.calls.append(method)
                if server.api:
                    self.answer(*server.api.pop(0))
                    return
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                if token in server.revoked:
                    self.answer(200, {"ok": False, "error": "token_revoked"})
                    return
                params = server.params(self.headers, body)
                if method == "chat.postMessage":
                    if not str(params.get("channel", "")).startswith("C"):
                        self.answer(200, {"ok": False, "error": "channel_not_found"})
                        return
                    self.answer(
                        200, {"ok": True, "channel": params["channel"], "ts": "1700000000.000100"}
                    )
                elif method == "files.getUploadURLExternal":
                    file_id = f"F{len(server.uploads) + 1:06d}"
                    url = f"{server.origin}/upload/{file_id}"
                    self.answer(200, {"ok": True, "upload_url": url, "file_id": file_id})
                elif method == "files.completeUploadExternal":
                    files = (
                        json.loads(params["files"])
                        if isinstance(params.get("files"), str)
                        else params["files"]
                    )
                    self.answer(200, {"ok": True, "files": [{"id": each["id"]} for each in files]})
                else:
                    self.answer(200, {"ok": False, "error": "unknown_method"})

            def answer(self, status, body, headers=None):
                data = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
                self.send_response(status)
                kind = "application/json" if isinstance(body, dict) else "text/plain"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        self.slack_webhook = f"{self.origin}/services/T000/B000/SECRETPATH"
        self.teams_workflow = (
            f"{self.origin}/workflows/abc123/triggers/manual/paths/invoke?sig=SECRET"
        )
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    @staticmethod
    def params(headers, body):
        kind = headers.get("Content-Type", "")
        if kind.startswith("application/json"):
            return json.loads(body or b"{}")
        return {key: values[-1] for key, values in urllib.parse.parse_qs(body.decode()).items()}

    def bodies(self, prefix):
        return [json.loads(body) for path, _, body in self.requests if path.startswith(prefix)]

    def api_params(self, method):
        return [
            self.params(headers, body)
            for path, headers, body in self.requests
            if path == f"/api/{method}"
        ]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
