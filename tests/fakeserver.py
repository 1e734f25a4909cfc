"""A local HTTP server on 127.0.0.1 for the download tests.

Serves in-memory files with Range support, can truncate or corrupt a response, redirects
(like the short links of public datasets), and imitates the Cityscapes site's protocol:
``/login`` (form POST, 302 on success, session cookie), ``/downloads/?list`` (JSON),
``/md5-sum/?packageID=N`` and ``/file-handling/?packageID=N``.
"""
from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class FakeServer:
    def __init__(self):
        self.files = {}          # path -> bytes
        self.redirects = {}      # path -> path
        self.truncate = {}       # path -> number of bytes actually sent
        self.corrupt = set()     # paths whose body has a flipped byte
        self.packages = {}       # Cityscapes: name -> (id, bytes)
        self.users = {}          # Cityscapes: username -> password
        self.requests = []       # (method, path, headers, body) of every request
        self.no_range = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def add_package(self, name, data, package_id):
        self.packages[name] = (package_id, data)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _record(self, body=b""):
                server.requests.append((self.command, self.path, dict(self.headers), body))

            def _send(self, code, body=b"", headers=None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _logged_in(self):
                return "session=ok" in (self.headers.get("Cookie") or "")

            def _serve_bytes(self, key, data):
                if key in server.corrupt:
                    data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + \
                        data[len(data) // 2 + 1:]
                start = 0
                rng = self.headers.get("Range")
                if rng and not server.no_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        return self._send(416)
                    code = 206
                else:
                    code = 200
                body = data[start:]
                sent = body
                if key in server.truncate:
                    sent = data[:server.truncate.pop(key)][start:]
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                if code == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                self.wfile.write(sent)
                if len(sent) < len(body):
                    self.wfile.flush()
                    self.close_connection = True

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                self._record(body)
                path = urlsplit(self.path).path.rstrip("/")
                if path == "/login":
                    form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                    if server.users.get(form.get("username")) == form.get("password"):
                        return self._send(302, headers={"Location": "/",
                                                        "Set-Cookie": "session=ok; Path=/"})
                    return self._send(200, b"<html>login failed</html>")
                self._send(404)

            def do_GET(self):
                self._record()
                parts = urlsplit(self.path)
                path, query = parts.path, parse_qs(parts.query)
                if path in server.redirects:
                    return self._send(302, headers={"Location": server.redirects[path]})
                if path in server.files:
                    return self._serve_bytes(path, server.files[path])
                if path.rstrip("/") == "/login":
                    return self._send(200, b"<html>login</html>")
                if path.rstrip("/") in ("/downloads", "/md5-sum", "/file-handling"):
                    if not self._logged_in():
                        return self._send(302, headers={"Location": "/login/"})
                    if "list" in query or parts.query == "list":
                        listing = [dict(name=n, packageID=str(i), size=f"{len(d) / 1024:.1f} KB",
                                        thirdparty="0") for n, (i, d) in server.packages.items()]
                        return self._send(200, json.dumps(listing).encode(),
                                          {"Content-Type": "application/json"})
                    pid = (query.get("packageID") or [""])[0]
                    for name, (i, data) in server.packages.items():
                        if str(i) == pid:
                            if path.rstrip("/") == "/md5-sum":
                                md5 = hashlib.md5(data).hexdigest()
                                return self._send(200, f"{md5}  {name}\n".encode())
                            return self._serve_bytes(name, data)
                self._send(404)

        return Handler
