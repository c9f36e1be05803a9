"""One file over HTTP into a folder: verified, resumable, bounded, and safe beside other processes.

    remote = head_file(session, url, "config.json", auth=auth, ...)          # size + hash from a HEAD
    download_file(session, remote, folder, auth=auth, retries=4, ...)         # -> folder/config.json

`minigpt2.weights.hub` (model names) and `minigpt2.weights.openai_release` both fetch through
`download_file`. What it promises:
  - Bytes go to `<file>.incomplete`; only a verified file is renamed to its real name. A dropped
    connection continues with an HTTP `Range` request (also in a later run); every byte received
    counts as progress, so a link that drops every few kilobytes still finishes.
  - One process at a time per file: `.locks/<file>.lock` is held (fcntl.flock) from the first byte to the
    rename. A second process waits for it, then finds the verified file and reuses it. Waiting,
    not failing fast, because the second process wants exactly that file: it gets it without a
    second download. flock is released by the kernel when a process dies, so a crash never
    leaves a lock behind.
  - `<file>.incomplete` is opened with O_NOFOLLOW (and O_EXCL when it is new): a planted symbolic
    link is refused, never written through.
  - Never more than the announced size is written; a Content-Encoding other than identity is
    refused (the sizes and hashes are those of the bytes on disk); a read that waits longer than
    `read_timeout_s`, or a file that takes longer than its total deadline, stops the download.
  - The token (`Auth`) goes only to the endpoint's own host (scheme, host and port), never to a
    host a redirect names, as huggingface_hub does.
"""

import errno
import hashlib
import json
import os
import re
import stat
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

try:
    import fcntl
except ImportError:      # Windows: no flock; one process per cache folder is then up to the user
    fcntl = None

CHUNK_BYTES = 1 << 16
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60              # the longest wait for the next bytes of a response
# The total deadline of one file, by default: an hour, or longer for a big file so that a link
# of MIN_BYTES_PER_S still finishes. A server that drips one byte per second is cut off by it.
DEADLINE_BASE_S = 3600
MIN_BYTES_PER_S = 100_000
LOCKS_FOLDER = ".locks"         # <folder>/.locks/<file>.lock, beside the files, out of their way
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)   # 0 on Windows, which has no O_NOFOLLOW (partial_size checks links)
RETRY_STATUS = {429, 500, 502, 503, 504}
WEIGHTS_FILE = "model.safetensors"
PICKLED_WEIGHTS = ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "model.ckpt.index")


class HubError(OSError):
    """A model could not be found, downloaded or verified. The message is one line to show as is."""


@dataclass
class RemoteFile:
    """What a HEAD request says about one file in a repository."""
    filename: str
    url: str
    size: int | None      # bytes, when the server says
    etag: str | None      # sha256 (LFS files) or git blob sha1 (small files), lower-case hex, or None


@dataclass(frozen=True)
class Auth:
    """A bearer token and the one origin ('https://huggingface.co') it may be sent to."""
    token: str | None
    origin: str

    def headers_for(self, url):
        if self.token and origin_of(url) == origin_of(self.origin):
            return {"Authorization": f"Bearer {self.token}"}
        return {}


def origin_of(url):
    """(scheme, host, port) of a URL: what must match before a token is sent."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def new_session():
    """A requests Session that asks for the bytes as they are (no compression) and carries no token."""
    import requests   # imported here so that importing this module stays light

    session = requests.Session()
    session.headers["User-Agent"] = "minigpt2"
    session.headers["Accept-Encoding"] = "identity"   # sizes and hashes are those of the bytes on disk
    return session


def default_deadline(size):
    return DEADLINE_BASE_S + (size or 0) / MIN_BYTES_PER_S


# ---------------------------------------------------------------- HEAD


def head_file(session, url, filename, *, auth=None, required=True, retries=4, backoff=0.5, repo_id="",
              revision="", read_timeout_s=READ_TIMEOUT_S):
    """HEAD `url` without following redirects to the CDN; the RemoteFile, or None for a missing optional file."""
    import requests

    failures = 0
    for _ in range(10):  # a few redirects (a renamed repository), never a loop
        headers = auth.headers_for(url) if auth else {}
        try:
            response = session.head(url, headers=headers, allow_redirects=False,
                                    timeout=(CONNECT_TIMEOUT_S, read_timeout_s))
        except (requests.ConnectionError, requests.Timeout) as error:
            if host_unknown(error):
                # No DNS answer means no network (or a wrong HF_ENDPOINT): retrying only delays
                # the error, and the CLI's offline fallback, by the whole backoff.
                raise network_error(url, error) from None
            failures += 1
            if failures > retries:
                raise network_error(url, error, tried=retries + 1) from None
            sleep_before_retry(backoff, failures)
            continue
        status = response.status_code
        if status in RETRY_STATUS:
            failures += 1
            if failures > retries:
                raise status_error(response, url, filename, repo_id, revision, retries)
            sleep_before_retry(backoff, failures, response)
            continue
        location = response.headers.get("Location", "")
        if 300 <= status < 400 and location and not response.headers.get("X-Linked-Size"):
            # A renamed repository: follow. The token goes along only if the new URL is on the
            # endpoint's own host (Auth.headers_for); "//otherhost/..." is another host.
            url = urljoin(url, location)
            continue
        if status == 404 and not required:
            return None
        if status >= 400:
            raise status_error(response, url, filename, repo_id, revision, retries)
        headers = response.headers
        size = headers.get("X-Linked-Size") or (headers.get("Content-Length") if status == 200 else None)
        etag = headers.get("X-Linked-Etag") or headers.get("ETag")
        return RemoteFile(filename, url, int(size) if size and size.isdigit() else None, normalize_etag(etag))
    raise HubError(f"too many redirects for {url}")


def normalize_etag(etag):
    """'W/"abc"' -> 'abc'; only hex digests we can check are kept."""
    if not etag:
        return None
    etag = etag.strip()
    etag = etag[2:] if etag.startswith("W/") else etag
    etag = etag.strip('"').lower()
    return etag if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", etag) else None


# ---------------------------------------------------------------- GET


def download_file(session, remote, folder, *, auth=None, retries=4, backoff=0.5, progress=True,
                  read_timeout_s=READ_TIMEOUT_S, deadline_s=None, verify=None, mirror_variable="HF_ENDPOINT"):
    """Fetch `remote` into `folder/<filename>` (see the module docstring); return its path.

    `verify(remote, partial)` checks the finished `.incomplete` file and raises to refuse it
    (default: `verify_file`). `deadline_s` bounds the whole file, retries included (default:
    `default_deadline(size)`). `mirror_variable` is the setting an error about the network names.
    If another process holds the file's lock, this waits for it and
    returns the file that process verified.
    """
    final = Path(folder) / remote.filename
    partial = Path(folder) / (remote.filename + ".incomplete")
    if not remote.size:
        raise HubError(
            f"{remote.url} announces {'an empty file (0 bytes)' if remote.size == 0 else 'no size'}, so "
            f"{remote.filename} cannot be downloaded and checked; is the endpoint a mirror of the hub?")
    with file_lock(Path(folder) / LOCKS_FOLDER / (remote.filename + ".lock"), remote.filename, progress):
        if final.is_file():
            return final         # another process downloaded and verified it while we waited
        deadline = time.monotonic() + (deadline_s if deadline_s is not None else default_deadline(remote.size))
        fetch_partial(session, remote, partial, auth=auth, retries=retries, backoff=backoff, progress=progress,
                      read_timeout_s=read_timeout_s, deadline=deadline, mirror_variable=mirror_variable)
        (verify or verify_file)(remote, partial)
        os.replace(partial, final)
    return final


@contextmanager
def file_lock(path, what, progress):
    """Hold an exclusive flock on `path` (created if needed); wait, saying so once, while another holds it."""
    if fcntl is None:
        yield
        return
    try:
        path.parent.mkdir(exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o644)
    except OSError as error:
        raise HubError(f"cannot open the lock file {path}: {error.strerror or error}; if it is a link, "
                       "remove it") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"{what}: another process is downloading it; waiting for it to finish", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)             # closing the descriptor releases the lock


def partial_size(partial):
    """Bytes already in `<file>.incomplete` (0 if none); a link or non-file there is a HubError."""
    try:
        info = os.lstat(partial)
    except FileNotFoundError:
        return 0
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        raise HubError(f"{partial} is {'a symbolic link' if stat.S_ISLNK(info.st_mode) else 'not a plain file'}"
                       f"{' with other hard links' if stat.S_ISREG(info.st_mode) else ''}; minigpt2 never "
                       "writes through one: remove it and run again")
    return info.st_size


def open_partial(partial, append):
    """A binary file object on `<file>.incomplete`: appended to, or created anew; never through a link."""
    if append:
        flags = os.O_WRONLY | os.O_APPEND | NOFOLLOW
    else:
        try:
            os.unlink(partial)
        except FileNotFoundError:
            pass
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW
    try:
        fd = os.open(partial, flags, 0o644)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EEXIST):
            raise HubError(f"{partial} appeared as a link or file while downloading; minigpt2 never writes "
                           "through one: remove it and run again") from None
        raise HubError(f"cannot write {partial}: {error.strerror or error}") from None
    return os.fdopen(fd, "wb", buffering=0)   # unbuffered: a full disk shows in write_body, not at close


class RetryableError(Exception):
    def __init__(self, message, response=None):
        super().__init__(message)
        self.response = response


def fetch_partial(session, remote, partial, *, auth, retries, backoff, progress, read_timeout_s, deadline,
                  mirror_variable="HF_ENDPOINT"):
    """Bring `<file>.incomplete` to `remote.size` bytes, resuming with Range; retry what can be retried."""
    import requests
    import urllib3
    from tqdm import tqdm

    size = remote.size
    failures = 0
    bar = tqdm(total=size, initial=0, unit="B", unit_scale=True, unit_divisor=1000,
               desc=remote.filename, file=sys.stderr, disable=not progress, leave=True)
    with bar:
        while True:
            offset = partial_size(partial)
            if offset > size:
                partial.unlink()  # longer than the file can be: not ours to continue
                offset = 0
            bar.reset(total=size)
            bar.update(offset)
            if offset == size:
                return
            if time.monotonic() > deadline:
                raise deadline_error(remote, offset)
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            headers.update(auth.headers_for(remote.url) if auth else {})
            try:
                with session.get(remote.url, headers=headers, stream=True,
                                 timeout=(CONNECT_TIMEOUT_S, read_timeout_s)) as response:
                    check_response(response, remote, offset, partial, failures, retries)
                    append = response.status_code == 206 and offset > 0  # 200: the whole file again
                    if not append:
                        bar.reset(total=size)
                    with open_partial(partial, append) as out:
                        write_body(response, out, partial, size - (offset if append else 0), bar, deadline)
                if partial_size(partial) < size:
                    raise RetryableError("the connection closed early")
                return
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, RetryableError) as error:
                if time.monotonic() > deadline:
                    raise deadline_error(remote, partial_size(partial)) from None
                failures = 0 if partial_size(partial) > offset else failures + 1
                if failures > retries:
                    raise network_error(remote.url, error, tried=retries + 1, mirror_variable=mirror_variable) from None
                if progress:
                    bar.write(f"{remote.filename}: {short_reason(error)}; continuing from "
                              f"{human_bytes(partial_size(partial))}", file=sys.stderr)
                sleep_before_retry(backoff, max(failures, 1), getattr(error, "response", None))


def check_response(response, remote, offset, partial, failures, retries):
    """Refuse what cannot be written as the file's next bytes: an error status, an encoding, a wrong range."""
    status = response.status_code
    if status == 416:
        # The server says there is nothing after `offset`: start the file again.
        partial.unlink(missing_ok=True)
        raise RetryableError(f"HTTP 416 for {remote.url}")
    if status in RETRY_STATUS:
        if failures >= retries:
            raise status_error(response, remote.url, remote.filename, "", "", retries)
        raise RetryableError(f"HTTP {status}", response)
    if status >= 400:
        raise status_error(response, remote.url, remote.filename, "", "", retries)
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise HubError(f"{remote.url} was sent with Content-Encoding {encoding!r} though 'identity' was asked; "
                       "its size and hash could not be checked, so it is refused")
    if status == 206 and offset and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
        partial.unlink()  # a part we did not ask for: start the file again
        raise RetryableError(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")


def write_body(response, out, partial, limit, bar, deadline):
    """Write at most `limit` bytes of the body to `out`, each block as it arrives (read1: a drop
    keeps what came before it). A full disk is a HubError; the partial file is kept."""
    import requests

    try:
        while limit > 0:
            if time.monotonic() > deadline:
                raise RetryableError("the file's deadline passed")
            block = response.raw.read1(min(CHUNK_BYTES, limit), decode_content=False)
            if not block:
                break
            out.write(block)
            limit -= len(block)
            bar.update(len(block))
        out.flush()
    except requests.RequestException:
        raise  # network trouble (requests' errors are OSErrors too): the caller retries
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise HubError(
                f"disk full while writing {partial} (kept, to resume): free some space and run "
                "again, or choose another folder with --cache-dir"
            ) from None
        if isinstance(error, (TimeoutError, ConnectionError)):
            raise
        raise HubError(f"cannot write {partial}: {error.strerror or error}") from None


def verify_file(remote, partial):
    """Check size, hash and format of a finished download; remove it and raise HubError if wrong."""
    def reject(why):
        partial.unlink(missing_ok=True)
        raise HubError(f"{remote.filename} from {remote.url} is corrupt ({why}); the bad file was removed, "
                       "run the command again")

    size = partial.stat().st_size
    if remote.size is not None and size != remote.size:
        reject(f"{size} bytes, expected {remote.size}")
    if remote.etag is not None:
        if len(remote.etag) == 64:
            digest = hashlib.sha256()
        else:  # a git blob id: sha1 over a 'blob <size>\0' header and the content
            digest = hashlib.sha1(b"blob %d\0" % size)
        with open(partial, "rb") as file:
            while block := file.read(CHUNK_BYTES):
                digest.update(block)
        if digest.hexdigest() != remote.etag:
            reject(f"checksum mismatch: expected {remote.etag}, got {digest.hexdigest()}")
    if remote.filename.endswith(".json"):
        try:
            json.loads(partial.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            reject(f"not valid JSON: {error}")
    if remote.filename.endswith(".safetensors"):
        # The full header check of the reader (dtypes, shapes, offsets inside the file), without
        # mapping the data, so nothing holds the file open when it is renamed.
        from minigpt2.weights.safetensors import load_metadata
        try:
            load_metadata(partial)
        except (ValueError, OSError) as error:
            reject(f"not a valid safetensors file: {str(error).replace(str(partial) + ': ', '')}")


# ---------------------------------------------------------------- waiting and messages


def sleep_before_retry(backoff, failures, response=None):
    """Wait before a retry: `backoff * 2**(failures-1)` s, or longer if a 429's Retry-After asks (60 s at most)."""
    delay = backoff * 2 ** (failures - 1)
    retry_after = response.headers.get("Retry-After", "") if response is not None else ""
    if retry_after.isdigit():
        delay = max(delay, min(int(retry_after), 60) if backoff else 0)
    if delay > 0:
        time.sleep(delay)
    return delay


def host_unknown(error):
    """True when the host name could not be resolved (the usual face of 'no network')."""
    text = str(error)
    return "NameResolutionError" in text or "Name or service not known" in text or \
        "Temporary failure in name resolution" in text or "nodename nor servname" in text


def network_error(url, error, tried=None, mirror_variable="HF_ENDPOINT"):
    tries = f" after {tried} tries" if tried else ""
    offline = "Set HF_HUB_OFFLINE=1 to use only local files, " if mirror_variable == "HF_ENDPOINT" else ""
    return HubError(
        f"cannot download {url}{tries} ({short_reason(error)}). No network? {offline}copy a model folder here "
        f"and pass its path, or set {mirror_variable} to a reachable mirror"
    )


def deadline_error(remote, done):
    return HubError(f"{remote.filename}: the download passed its deadline with {human_bytes(done)} of "
                    f"{human_bytes(remote.size)} (kept, to resume); the server is too slow: run again later, "
                    "or pass a longer deadline_s")


def short_reason(error):
    """The useful end of a requests/urllib3 error chain: 'Connection refused', 'timed out', ..."""
    text = str(error)
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if found:
        return found.group(1).strip()
    if "timed out" in text.lower() or "Timeout" in type(error).__name__:
        return "timed out"
    if "IncompleteRead" in text or "Connection broken" in text:
        return "connection broken in the middle of the file"
    return (text.splitlines()[0][:120] if text else type(error).__name__)


def status_error(response, url, filename, repo_id, revision, retries):
    status = response.status_code
    code = response.headers.get("X-Error-Code", "")
    if code == "RepoNotFound" and repo_id:
        return HubError(f"no model repository {repo_id!r} (HTTP {status} for {url}): check the name "
                        "(a private repository needs HF_TOKEN)")
    if code == "GatedRepo":
        return HubError(f"{repo_id or url} is gated (HTTP {status}): accept its terms on the hub's web page "
                        "and set HF_TOKEN to a token of that account")
    if status == 404:
        if code == "RevisionNotFound" and repo_id:
            return HubError(f"{repo_id} has no revision {revision!r} (HTTP 404)")
        if filename == WEIGHTS_FILE:
            return HubError(
                f"{repo_id or url} has no {WEIGHTS_FILE} (HTTP 404): minigpt2 only loads safetensors weights; "
                f"pickled checkpoints ({', '.join(PICKLED_WEIGHTS[:2])}) can run code when loaded and are refused"
            )
        return HubError(f"{url} not found (HTTP 404): check the model name and revision")
    if status in (401, 403):
        return HubError(
            f"access denied to {url} (HTTP {status}): the repository is private, gated or does not exist; "
            "set HF_TOKEN to a token that can read it"
        )
    if status in RETRY_STATUS:
        what = "rate-limited" if status == 429 else "failing"
        return HubError(f"HTTP {status} from {url} after {retries + 1} tries: the server is {what}, try again later")
    return HubError(f"HTTP {status} from {url}")


def human_bytes(n):
    """548105171 -> '548 MB', 6431200599 -> '6.43 GB' (powers of 1000, as the hub shows sizes)."""
    if n < 1000:
        return f"{n} B"
    if n < 1e6:
        return f"{n / 1e3:.0f} kB"
    if n < 1e9:
        return f"{n / 1e6:.0f} MB"
    return f"{n / 1e9:.2f} GB"
