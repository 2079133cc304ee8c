"""A loopback stand-in for the Hugging Face hub's file endpoint, for sae_lens's real download path.

It serves files from a local folder at ``/{repo_id}/resolve/{revision}/{path}`` with the headers
``huggingface_hub`` reads (``X-Repo-Commit``, ``ETag``, ``Content-Length``) and HTTP ranges (sae_lens
reads a safetensors header with a range request). Point a process at it with ``HF_ENDPOINT``.
"""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def serve(root: Path) -> tuple[ThreadingHTTPServer, str]:
    """Start the server on a free loopback port; returns it and its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _file(self) -> Path | None:
            m = re.match(r"^/(.+?/.+?)/resolve/[^/]+/(.+)$", self.path.split("?")[0])
            if not m:
                return None
            path = root / m.group(1) / m.group(2)
            return path if path.is_file() else None

        def _send(self, body_wanted: bool) -> None:
            path = self._file()
            if path is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = path.read_bytes()
            etag = hashlib.sha256(data).hexdigest()
            rng = self.headers.get("Range")
            status, body = 200, data
            if rng:
                a, b = re.match(r"bytes=(\d+)-(\d*)", rng).groups()
                start, end = int(a), int(b) if b else len(data) - 1
                status, body = 206, data[start : end + 1]
            self.send_response(status)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{etag}"')
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            if body_wanted:
                self.wfile.write(body)

        def do_HEAD(self):  # noqa: N802
            self._send(False)

        def do_GET(self):  # noqa: N802
            self._send(True)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
