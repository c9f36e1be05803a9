"""Model names -> local folders: the bundled models, the caches, and a verified, resumable download.

    resolve_model_folder("gpt2")       # -> ~/.cache/minigpt2/gpt2 (downloaded on first use)
    download_model("gpt2-medium")      # what `python download_weights.py gpt2-medium` runs

Where a name is looked for, in order (`resolve_model_folder`):
  1. an existing folder path: used as it is;
  2. a model bundled with the package: `minigpt2/models/<name>/`;
  3. the minigpt2 cache: `$MINIGPT2_HOME` (default ~/.cache/minigpt2), or `cache_dir=`;
     one folder per model: `<cache>/gpt2/`, `<cache>/owner--name/` for repository ids;
  4. a snapshot already in the Hugging Face cache (`$HF_HOME/hub/models--owner--name/snapshots/<commit>/`),
     so people who used transformers do not download the same weights twice;
  5. a download from the hub, unless `local_files_only=True` or `HF_HUB_OFFLINE=1`.

How a download is made safe, the way the hub itself works:
  - A HEAD request without following redirects gives the file's size and hash. Large (LFS) files
    answer with a redirect and `X-Linked-Size` / `X-Linked-Etag` (the sha256 of the content).
    Small files answer 200 with `ETag` = their git blob id (sha1 of "blob <size>\\0" + content) and
    `Content-Length`. Whatever the server gives is checked: sha256 for 64 hex digits, the git blob
    sha1 for 40 hex digits, the size when known. JSON files must also parse, and the weights must
    pass the header validation of `minigpt2.weights.safetensors` (`load_metadata`, the check `load_file` runs).
  - Bytes go to `<file>.incomplete`; only a verified file is renamed to its real name, so a file
    under a real name is always complete. A bad file is removed.
  - A dropped connection is retried with exponential backoff, continuing with an HTTP `Range`
    request from where the file stopped (also in a later run). The retry count starts again
    whenever a try made progress, so a slow, flaky link still finishes. 429 and 5xx are retried too.
  - Only safetensors weights are fetched: pickled checkpoints (`pytorch_model.bin`) can run code
    when loaded, so they are never downloaded.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urljoin

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"
BUNDLED_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"

WEIGHTS_FILE = "model.safetensors"
REQUIRED_FILES = ("config.json", WEIGHTS_FILE)
# Downloaded when the repository has them; a 404 for these is not an error.
OPTIONAL_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "generation_config.json")
PICKLED_WEIGHTS = ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "model.ckpt.index")

# Bytes a read that is cut off by a dropped connection loses (urllib3 drops a short last read).
CHUNK_BYTES = 1 << 16
TIMEOUT_S = (10, 60)  # (connect, read) seconds for each request
RETRY_STATUS = {429, 500, 502, 503, 504}


class HubError(OSError):
    """A model could not be found, downloaded or verified. The message is one line to show as is."""


@dataclass(frozen=True)
class OfficialModel:
    name: str
    repo_id: str
    n_params: str         # as the model card says it
    # Size of model.safetensors: 4 bytes per parameter, plus the `attn.bias` causal-mask buffers
    # (n_layer x 1024 x 1024 float32, ~4.2 MB each) that these checkpoints still carry.
    download_bytes: int

    @property
    def download_size(self):
        return _human_bytes(self.download_bytes)


# The five official checkpoints; `download_weights.py` with no arguments lists them.
OFFICIAL_MODELS = {
    model.name: model
    for model in (
        OfficialModel("gpt2", "openai-community/gpt2", "124M", 548_105_171),
        OfficialModel("gpt2-medium", "openai-community/gpt2-medium", "355M", 1_520_013_706),
        OfficialModel("gpt2-large", "openai-community/gpt2-large", "774M", 3_247_159_415),
        OfficialModel("gpt2-xl", "openai-community/gpt2-xl", "1.5B", 6_431_200_599),
        OfficialModel("distilgpt2", "distilbert/distilgpt2", "82M", 352_824_413),
    )
}


# ---------------------------------------------------------------- names and places


def minigpt2_cache_dir(cache_dir=None):
    """The minigpt2 cache folder: `cache_dir`, else `$MINIGPT2_HOME`, else ~/.cache/minigpt2."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("MINIGPT2_HOME") or Path.home() / ".cache" / "minigpt2").expanduser()


def huggingface_cache_dir():
    """Where transformers / huggingface_hub keep their snapshots (`$HF_HUB_CACHE`, `$HF_HOME/hub`)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def bundled_models():
    """{name: folder} of the models shipped inside the package (folders holding a config.json)."""
    if not BUNDLED_MODELS_DIR.is_dir():
        return {}
    return {
        folder.name: folder
        for folder in sorted(BUNDLED_MODELS_DIR.iterdir())
        if (folder / "config.json").is_file()
    }


_NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")


def check_model_name(name):
    """Refuse names that are not `name` or `owner/name`, or that could escape the cache folder."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    parts = name.split("/")
    bad = (
        len(parts) > 2
        or len(name) > 200
        or any(not _NAME_PART.fullmatch(part) or ".." in part or "--" in part for part in parts)
    )
    if bad:
        raise ValueError(
            f"invalid model name {name!r}: use a name like 'gpt2', a repository id 'owner/name' "
            "(letters, digits, '-', '_', '.'; no '..', '--', backslashes, empty parts or absolute paths), "
            "or the path of an existing folder"
        )
    return name


def check_revision(revision):
    if not isinstance(revision, str) or not _REVISION.fullmatch(revision) or ".." in revision or "//" in revision:
        raise ValueError(f"invalid revision {revision!r}: use a branch, tag or commit id such as 'main'")
    return revision


def repo_id_for(name):
    """'gpt2' -> 'openai-community/gpt2'; an 'owner/name' id stays as it is."""
    check_model_name(name)
    if name in OFFICIAL_MODELS:
        return OFFICIAL_MODELS[name].repo_id
    if "/" in name:
        return name
    raise ValueError(
        f"unknown model {name!r}: choose one of {', '.join(OFFICIAL_MODELS)}"
        + (f", a bundled model ({', '.join(bundled_models())})" if bundled_models() else "")
        + ", a repository id 'owner/name', or the path of a folder"
    )


def cache_folder_name(name, revision=DEFAULT_REVISION):
    """The model's folder name inside the minigpt2 cache: 'gpt2', 'owner--name', 'gpt2@v1'."""
    repo_id = repo_id_for(name)
    short = {model.repo_id: model.name for model in OFFICIAL_MODELS.values()}
    folder = short.get(repo_id, repo_id.replace("/", "--"))
    if check_revision(revision) != DEFAULT_REVISION:
        folder += "@" + revision.replace("/", "--")
    return folder


def _is_complete(folder):
    return all((Path(folder) / filename).is_file() for filename in REQUIRED_FILES)


def find_in_huggingface_cache(name, revision=DEFAULT_REVISION, hub_cache=None):
    """The snapshot folder of `name` in the Hugging Face cache with config.json + model.safetensors, or None.

    Looks under the repository id and, for the official names, the legacy id ('models--gpt2').
    The snapshot comes from `refs/<revision>`, or is the commit itself; for 'main' with no ref
    file, the newest complete snapshot is taken.
    """
    hub_cache = Path(hub_cache) if hub_cache is not None else huggingface_cache_dir()
    repo_ids = [repo_id_for(name)]
    if name in OFFICIAL_MODELS:
        repo_ids.append(name)
    for repo_id in repo_ids:
        snapshots = hub_cache / ("models--" + repo_id.replace("/", "--")) / "snapshots"
        if not snapshots.is_dir():
            continue
        ref_file = hub_cache / ("models--" + repo_id.replace("/", "--")) / "refs" / revision
        commit = ref_file.read_text().strip() if ref_file.is_file() else revision
        if _is_complete(snapshots / commit):
            return snapshots / commit
        if revision == DEFAULT_REVISION:
            complete = [folder for folder in snapshots.iterdir() if _is_complete(folder)]
            if complete:
                return max(complete, key=lambda folder: folder.stat().st_mtime)
    return None


def _offline():
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_model_folder(name_or_path, cache_dir=None, local_files_only=False, revision=DEFAULT_REVISION):
    """A folder holding the model `name_or_path` (config.json, model.safetensors, ...), downloading if needed.

    An existing folder path is returned as it is; otherwise the name is looked up in the bundled
    models, the minigpt2 cache, the Hugging Face cache, and finally downloaded (see the module
    docstring). Raises ValueError for a bad name and HubError (an OSError) when the model is not
    available, each with a one-line message.
    """
    if name_or_path is None or not os.fspath(name_or_path).strip():
        # Path("") is ".": an empty name would quietly load whatever is in the current folder
        raise ValueError(f"no model given ({name_or_path!r}): pass a model name such as 'gpt2' or a folder")
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{name_or_path} is a file; pass the folder that holds config.json and {WEIGHTS_FILE}")
    name = os.fspath(name_or_path)
    try:
        check_model_name(name)
    except ValueError:
        raise ValueError(
            f"{name!r} is neither an existing folder nor a model name ('gpt2', 'owner/name'; "
            "no '..', '--', backslashes, empty parts or absolute paths)"
        ) from None
    bundled = bundled_models()
    if name in bundled and revision == DEFAULT_REVISION:
        return bundled[name]
    folder = minigpt2_cache_dir(cache_dir) / cache_folder_name(name, revision)
    if _is_complete(folder):
        return folder
    hub_caches = [huggingface_cache_dir()] + ([Path(cache_dir).expanduser()] if cache_dir is not None else [])
    for hub_cache in hub_caches:
        snapshot = find_in_huggingface_cache(name, revision, hub_cache)
        if snapshot is not None:
            return snapshot
    if local_files_only or _offline():
        why = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE=1"
        raise HubError(
            f"model {name!r} is not in {folder} nor in the Hugging Face cache, and downloading is off "
            f"({why}): run `python download_weights.py {name}` (or `minigpt2 download {name}`) "
            "where there is network, or pass the path of a model folder"
        )
    return download_model(name, cache_dir=cache_dir, revision=revision)


# ---------------------------------------------------------------- download


@dataclass
class RemoteFile:
    """What a HEAD request says about one file in a repository."""
    filename: str
    url: str
    size: int | None      # bytes, when the server says
    etag: str | None      # sha256 (LFS files) or git blob sha1 (small files), lower-case hex, or None


def hub_endpoint(endpoint=None):
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def file_url(repo_id, filename, revision=DEFAULT_REVISION, endpoint=None):
    """`{endpoint}/{repo_id}/resolve/{revision}/{filename}`, joined with '/' (never os.path.join)."""
    return f"{hub_endpoint(endpoint)}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"


def download_model(name, cache_dir=None, revision=DEFAULT_REVISION, endpoint=None,
                   retries=4, backoff=0.5, progress=True):
    """Download `name` ('gpt2' or 'owner/name') into the minigpt2 cache; return its folder.

    Files already complete are not fetched again; a `<file>.incomplete` left by an earlier run is
    continued. `retries` is how many failed tries in a row are allowed per file (a try that makes
    progress resets the count); the n-th retry waits `backoff * 2**(n-1)` seconds.
    """
    import requests  # imported here so that `import minigpt2.weights.hub` stays light

    if revision == DEFAULT_REVISION and name in bundled_models():
        return bundled_models()[name]  # shipped with the package: nothing to download
    repo_id = repo_id_for(name)
    folder = minigpt2_cache_dir(cache_dir) / cache_folder_name(name, check_revision(revision))
    missing = [filename for filename in REQUIRED_FILES + OPTIONAL_FILES
               if not (folder / filename).is_file()]  # only verified files ever get their real name
    if _offline():
        if _is_complete(folder):
            return folder
        raise HubError(f"HF_HUB_OFFLINE=1 is set, so {name} is not downloaded; unset it to download")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise HubError(f"cannot create the cache folder {folder}: {error.strerror or error}") from None
    session = requests.Session()
    session.headers["User-Agent"] = "minigpt2"
    # Sizes must be the bytes on disk, not those of a compressed transfer.
    session.headers["Accept-Encoding"] = "identity"
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        session.headers["Authorization"] = f"Bearer {token}"  # requests drops it on redirects to other hosts
    with session:
        to_fetch = []
        for filename in missing:
            url = file_url(repo_id, filename, revision, endpoint)
            remote = _head(session, url, filename, repo_id, revision,
                           required=filename in REQUIRED_FILES, retries=retries, backoff=backoff)
            if remote is not None:
                to_fetch.append(remote)
        _check_free_space(folder, to_fetch)
        for remote in to_fetch:
            _download_file(session, remote, folder, retries=retries, backoff=backoff, progress=progress)
    return folder


def _head(session, url, filename, repo_id, revision, required, retries, backoff):
    """HEAD `url` without following redirects to the CDN; the RemoteFile, or None for a missing optional file."""
    import requests

    failures = 0
    for _ in range(10):  # a few relative redirects (a renamed repository), never a loop
        try:
            response = session.head(url, allow_redirects=False, timeout=TIMEOUT_S)
        except (requests.ConnectionError, requests.Timeout) as error:
            if _host_unknown(error):
                # No DNS answer means no network (or a wrong HF_ENDPOINT): retrying only delays
                # the error, and the CLI's offline fallback, by the whole backoff.
                raise _network_error(url, error) from None
            failures += 1
            if failures > retries:
                raise _network_error(url, error, tried=retries + 1) from None
            _sleep(backoff, failures)
            continue
        status = response.status_code
        if status in RETRY_STATUS:
            failures += 1
            if failures > retries:
                raise _status_error(response, url, filename, repo_id, revision, retries)
            _sleep(backoff, failures, response)
            continue
        location = response.headers.get("Location", "")
        if 300 <= status < 400 and location.startswith("/") and not response.headers.get("X-Linked-Size"):
            url = urljoin(url, location)  # same server: follow; a CDN redirect is left to the GET
            continue
        if status == 404 and not required:
            return None
        if status >= 400:
            raise _status_error(response, url, filename, repo_id, revision, retries)
        headers = response.headers
        size = headers.get("X-Linked-Size") or (headers.get("Content-Length") if status == 200 else None)
        etag = headers.get("X-Linked-Etag") or headers.get("ETag")
        return RemoteFile(filename, url, int(size) if size and size.isdigit() else None, _normalize_etag(etag))
    raise HubError(f"too many redirects for {url}")


def _normalize_etag(etag):
    """'W/"abc"' -> 'abc'; only hex digests we can check are kept."""
    if not etag:
        return None
    etag = etag.strip()
    etag = etag[2:] if etag.startswith("W/") else etag
    etag = etag.strip('"').lower()
    return etag if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", etag) else None


def _check_free_space(folder, to_fetch):
    needed = 0
    for remote in to_fetch:
        if remote.size is not None:
            partial = folder / (remote.filename + ".incomplete")
            needed += remote.size - (partial.stat().st_size if partial.is_file() else 0)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise HubError(
            f"not enough disk space in {folder}: the download needs {_human_bytes(needed)}, "
            f"{_human_bytes(free)} is free; free some space or choose another folder with --cache-dir"
        )


def _download_file(session, remote, folder, retries, backoff, progress):
    """Fetch one file into `<file>.incomplete`, resuming with Range; verify it; rename it."""
    import requests
    from tqdm import tqdm

    final = folder / remote.filename
    partial = folder / (remote.filename + ".incomplete")
    failures = 0
    bar = tqdm(total=remote.size, initial=0, unit="B", unit_scale=True, unit_divisor=1000,
               desc=remote.filename, file=sys.stderr, disable=not progress, leave=True)
    with bar:
        while True:
            offset = partial.stat().st_size if partial.is_file() else 0
            if remote.size is not None and offset > remote.size:
                partial.unlink()  # longer than the file can be: not ours to continue
                offset = 0
            bar.reset(total=remote.size)
            bar.update(offset)
            if remote.size is not None and offset == remote.size:
                break
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                with session.get(remote.url, headers=headers, stream=True, timeout=TIMEOUT_S) as response:
                    if response.status_code == 416:
                        # The server says there is nothing after `offset`: start the file again.
                        partial.unlink(missing_ok=True)
                        raise _Retry(f"HTTP 416 for {remote.url}")
                    if response.status_code in RETRY_STATUS:
                        if failures >= retries:
                            raise _status_error(response, remote.url, remote.filename, "", "", retries)
                        raise _Retry(f"HTTP {response.status_code}", response)
                    if response.status_code >= 400:
                        raise _status_error(response, remote.url, remote.filename, "", "", retries)
                    # 206: continue the partial file; 200: the server sent the whole file again.
                    mode = "ab" if response.status_code == 206 and offset else "wb"
                    if mode == "ab" and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                        partial.unlink()  # a part we did not ask for: start the file again
                        raise _Retry(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
                    if mode == "wb":
                        bar.reset(total=remote.size)
                    _write_body(response, partial, mode, bar)
                if remote.size is None or partial.stat().st_size >= remote.size:
                    break
                raise _Retry("the connection closed early")
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    _Retry) as error:
                progressed = partial.is_file() and partial.stat().st_size > offset
                failures = 0 if progressed else failures + 1
                if failures > retries:
                    raise _network_error(remote.url, error, tried=retries + 1) from None
                if progress:
                    bar.write(f"{remote.filename}: {_short_reason(error)}; continuing from "
                              f"{_human_bytes(partial.stat().st_size if partial.is_file() else 0)}", file=sys.stderr)
                _sleep(backoff, max(failures, 1), getattr(error, "response", None))
    _verify(remote, partial)
    os.replace(partial, final)


class _Retry(Exception):
    def __init__(self, message, response=None):
        super().__init__(message)
        self.response = response


def _write_body(response, partial, mode, bar):
    """Append (or write) the response body to `partial`; a full disk is a HubError, the file is kept."""
    import requests

    try:
        with open(partial, mode) as out:
            for chunk in response.iter_content(CHUNK_BYTES):
                out.write(chunk)
                bar.update(len(chunk))
    except requests.RequestException:
        raise  # network trouble (requests' errors are OSErrors too): the caller retries
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise HubError(
                f"disk full while writing {partial} (kept, to resume): free some space and run "
                "again, or choose another folder with --cache-dir"
            ) from None
        raise HubError(f"cannot write {partial}: {error.strerror or error}") from None


def _verify(remote, partial):
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


def _sleep(backoff, failures, response=None):
    """Wait before a retry: `backoff * 2**(failures-1)` s, or longer if a 429's Retry-After asks (60 s at most)."""
    delay = backoff * 2 ** (failures - 1)
    retry_after = response.headers.get("Retry-After", "") if response is not None else ""
    if retry_after.isdigit():
        delay = max(delay, min(int(retry_after), 60) if backoff else 0)
    if delay > 0:
        time.sleep(delay)
    return delay


def _host_unknown(error):
    """True when the host name could not be resolved (the usual face of 'no network')."""
    text = str(error)
    return "NameResolutionError" in text or "Name or service not known" in text or \
        "Temporary failure in name resolution" in text or "nodename nor servname" in text


def _network_error(url, error, tried=None):
    tries = f" after {tried} tries" if tried else ""
    return HubError(
        f"cannot download {url}{tries} ({_short_reason(error)}). No network? Set HF_HUB_OFFLINE=1 to use "
        "only local files, copy a model folder here and pass its path, or set HF_ENDPOINT to a reachable mirror"
    )


def _short_reason(error):
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


def _status_error(response, url, filename, repo_id, revision, retries):
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


def _human_bytes(n):
    """548105171 -> '548 MB', 6431200599 -> '6.43 GB' (powers of 1000, as the hub shows sizes)."""
    if n < 1000:
        return f"{n} B"
    if n < 1e6:
        return f"{n / 1e3:.0f} kB"
    if n < 1e9:
        return f"{n / 1e6:.0f} MB"
    return f"{n / 1e9:.2f} GB"


def describe_official_models(cache_dir=None):
    """Lines listing the five official models: repository id, download size, and whether it is here."""
    lines = [f"{'name':<13} {'params':>6}  {'download':>9}  {'repository':<30} local"]
    for model in OFFICIAL_MODELS.values():
        local = _is_complete(minigpt2_cache_dir(cache_dir) / model.name) or find_in_huggingface_cache(model.name)
        lines.append(f"{model.name:<13} {model.n_params:>6}  {model.download_size:>9}  {model.repo_id:<30} "
                     f"{'yes' if local else '-'}")
    return lines
