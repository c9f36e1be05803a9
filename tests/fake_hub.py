"""A loopback HTTP server that answers like the Hugging Face hub, with faults on demand (tests only).

    hub = FakeHub()
    hub.add_repo("openai-community/gpt2", {"config.json": b"{}", "model.safetensors": data})
    hub.fail("model.safetensors", "drop")          # the next GET of its bytes stops half way
    hub.fail("model.safetensors", "gzip")          # ... comes gzip-compressed (see BODY_FAULTS)
    ... hub.url is the endpoint (http://127.0.0.1:PORT) ...
    hub.close()

Like the hub: `GET/HEAD /{repo}/resolve/{revision}/{filename}`. Weights (`*.safetensors`, as LFS
files) answer 302 to `/cdn/{sha256}` with `X-Linked-Etag` (sha256) and `X-Linked-Size`; small files
answer 200 with `ETag` = their git blob sha1. Bodies honour `Range: bytes=N-`. Missing repositories
and files are 404 with the hub's `X-Error-Code`. Every request is logged in `hub.log`, with its
Host and Authorization headers.
"""

import gzip
import hashlib
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_SUFFIXES = (".safetensors", ".bin")


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Request:
    method: str
    path: str
    filename: str | None   # the repository file this request is about, when there is one
    range: str | None      # the Range header sent, if any
    host: str | None = None
    authorization: str | None = None


@dataclass
class Fault:
    filename: str
    kind: str       # one of BODY_FAULTS, "ignore_range", or an HTTP status like "500"
    times: int      # how many more requests it applies to


class FakeHub:
    def __init__(self):
        self.repos = {}        # repo_id -> {filename: bytes}
        self.aliases = {}      # old repo_id -> (repo_id, what the Location starts with)
        self.log = []          # Request, in the order received
        self.faults = []
        self._lock = threading.Lock()
        hub = self

        class Handler(_HubHandler):
            fake_hub = hub

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()

    def add_repo(self, repo_id, files):
        self.repos[repo_id] = dict(files)

    def add_alias(self, old_repo_id, repo_id, host=""):
        """A renamed repository: requests for the old id get a redirect to the new one, relative
        ('/new/...'), or to `host` when given ('//localhost:PORT' names another host, same server)."""
        self.aliases[old_repo_id] = (repo_id, host)

    def fail(self, filename, kind, times=1):
        """Make the next `times` matching requests for `filename` fail with `kind`."""
        self.faults.append(Fault(filename, str(kind), times))

    def requests_for(self, filename, method=None):
        return [r for r in self.log if r.filename == filename and (method is None or r.method == method)]

    def content_gets(self, filename):
        """GET requests that carried the bytes of `filename` (the CDN request for weights)."""
        return [r for r in self.requests_for(filename, "GET") if r.path.startswith("/cdn/") or
                not filename.endswith(LFS_SUFFIXES)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def _take_fault(self, filename, kinds):
        with self._lock:
            for fault in self.faults:
                if fault.filename == filename and fault.kind in kinds and fault.times > 0:
                    fault.times -= 1
                    return fault.kind
        return None

    def _lookup_blob(self, sha256):
        for files in self.repos.values():
            for filename, data in files.items():
                if hashlib.sha256(data).hexdigest() == sha256:
                    return filename, data
        return None, None


STATUS_FAULTS = {"401", "403", "404", "429", "500", "502", "503"}
# Faults of a GET that carries a file's bytes:
#   drop: send half the body, hang up;  drop_short: send 30,000 bytes (less than a 64 KB block), hang up;
#   corrupt: flip the first byte;  oversize: 5 MB more than the file, with a Content-Length to match;
#   gzip: the body gzip-compressed, with Content-Encoding: gzip;  slow: 1 byte every 50 ms (5 s at most);
#   pause: send half, wait PAUSE_S, send the rest.
BODY_FAULTS = {"drop", "drop_short", "corrupt", "oversize", "gzip", "slow", "pause"}
PAUSE_S = 1.0


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake_hub = None

    def log_message(self, *args):  # keep test output clean
        pass

    def do_HEAD(self):
        self._answer(send_body=False)

    def do_GET(self):
        self._answer(send_body=True)

    def _answer(self, send_body):
        hub = self.fake_hub
        if self.path.startswith("/cdn/"):
            filename, data = hub._lookup_blob(self.path[len("/cdn/"):])
            hub.log.append(self._request(filename))
            if data is None:
                return self._status(404, "EntryNotFound")
            return self._body(filename, data, send_body)
        parts = self.path.lstrip("/").split("/")
        if "resolve" not in parts or parts.index("resolve") + 2 >= len(parts):
            hub.log.append(self._request(None))
            return self._status(404, "EntryNotFound")
        at = parts.index("resolve")
        repo_id, filename = "/".join(parts[:at]), "/".join(parts[at + 2:])
        hub.log.append(self._request(filename))
        status = hub._take_fault(filename, STATUS_FAULTS)
        if status is not None:
            return self._status(int(status), "")
        if repo_id in hub.aliases:
            self.send_response(307)
            new_repo_id, host = hub.aliases[repo_id]
            self.send_header("Location", host + "/" + "/".join([new_repo_id, *parts[at:]]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if repo_id not in hub.repos:
            return self._status(404, "RepoNotFound")
        if filename not in hub.repos[repo_id]:
            return self._status(404, "EntryNotFound")
        data = hub.repos[repo_id][filename]
        if filename.endswith(LFS_SUFFIXES):
            sha256 = hashlib.sha256(data).hexdigest()
            self.send_response(302)
            self.send_header("Location", f"{hub.url}/cdn/{sha256}")
            self.send_header("X-Linked-Etag", f'"{sha256}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("ETag", f'"{sha256}"')
            self.send_header("X-Repo-Commit", "0" * 40)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._body(filename, data, send_body, etag=git_blob_sha1(data))

    def _request(self, filename):
        return Request(self.command, self.path, filename, self.headers.get("Range"), self.headers.get("Host"),
                       self.headers.get("Authorization"))

    def _status(self, code, error_code):
        body = f"error {code}".encode()
        self.send_response(code)
        if error_code:
            self.send_header("X-Error-Code", error_code)
        if code == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def _body(self, filename, data, send_body, etag=None):
        hub = self.fake_hub
        start = 0
        range_header = self.headers.get("Range")
        ignore_range = send_body and hub._take_fault(filename, {"ignore_range"})
        if range_header and not ignore_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        fault = hub._take_fault(filename, BODY_FAULTS) if send_body else None
        body = data[start:]
        if fault == "corrupt" and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        if fault == "oversize":
            body += b"\0" * 5_000_000
        if fault == "gzip":
            body = gzip.compress(body)
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if etag:
            self.send_header("ETag", f'"{etag}"')
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if fault == "gzip":
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        if not send_body:
            return
        if fault == "drop":
            # Send half, then hang up: the client sees fewer bytes than Content-Length.
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if fault == "drop_short":
            self.wfile.write(body[:30_000])
            self.wfile.flush()
            self.close_connection = True
            return
        if fault == "slow":
            self.close_connection = True
            try:
                for at in range(min(len(body), 100)):
                    self.wfile.write(body[at:at + 1])
                    self.wfile.flush()
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass     # the client gave up, as it should
            return
        if fault == "pause":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            time.sleep(PAUSE_S)
            body = body[len(body) // 2:]
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True   # the client stopped reading (it had all it wanted)
