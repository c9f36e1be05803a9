"""OpenAI's original GPT-2 release: download it, verify it, convert it to a Hugging Face folder.

    download_openai_release("124M")     # -> ~/.cache/minigpt2/openai-124M (also "gpt2" etc.)
    convert_to_hf(release_folder, out)  # -> out/config.json + out/model.safetensors (+ tokenizer)

The files are those of the gpt-2 repository's download_model.py, at
``{endpoint}/models/{size}/{file}``; the endpoint is OpenAI's public storage, or
``$MINIGPT2_OPENAI_ENDPOINT``, or the ``endpoint=`` argument (the tests use a loopback server).

The promises are those of minigpt2.weights.download, which fetches the bytes: ``<file>.incomplete``,
renamed only when complete, under a per-file lock; a dropped connection continues with an HTTP
Range request (also in a later run); the size must equal the server's Content-Length. OpenAI publishes no checksums, so the sha256 of each
file is recorded in ``SHA256SUMS`` in the folder after its first download (the format of
``sha256sum``, so ``sha256sum -c SHA256SUMS`` checks it too), and every later run checks the
files against it: a file changed on disk is an error, never silently used.
"""

import hashlib
import os
import re
import shutil
from pathlib import Path

from minigpt2.weights.download import (CONNECT_TIMEOUT_S, READ_TIMEOUT_S, RETRY_STATUS, HubError, RemoteFile,
                                       download_file, host_unknown, network_error, new_session,
                                       sleep_before_retry, verify_file)
from minigpt2.weights.hub import minigpt2_cache_dir

DEFAULT_ENDPOINT = "https://openaipublic.blob.core.windows.net/gpt-2"
ENDPOINT_ENV = "MINIGPT2_OPENAI_ENDPOINT"
RELEASE_FILES = ("checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001",
                 "model.ckpt.index", "model.ckpt.meta", "vocab.bpe")
SIZES = ("124M", "355M", "774M", "1558M")
HF_NAMES = {"gpt2": "124M", "gpt2-medium": "355M", "gpt2-large": "774M", "gpt2-xl": "1558M"}
SHA256_FILE = "SHA256SUMS"


def release_size(name):
    """'124M' or 'gpt2' -> '124M'; anything else is a ValueError listing the choices."""
    size = HF_NAMES.get(name, name)
    if size not in SIZES:
        raise ValueError(f"unknown OpenAI release {name!r}: choose one of {', '.join(SIZES)} "
                         f"(or {', '.join(HF_NAMES)})")
    return size


def openai_endpoint(endpoint=None):
    return (endpoint or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")


def release_folder(name, cache_dir=None):
    """Where a release lives in the minigpt2 cache: <cache>/openai-124M."""
    return minigpt2_cache_dir(cache_dir) / f"openai-{release_size(name)}"


# ---------------------------------------------------------------- sha256 records

def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_sha256s(folder):
    """{file name: sha256} recorded in folder/SHA256SUMS (empty if there is none)."""
    path = Path(folder) / SHA256_FILE
    if not path.is_file():
        return {}
    recorded = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        found = re.fullmatch(r"([0-9a-f]{64}) [ *](\S+)", line.strip())
        if found:
            recorded[found.group(2)] = found.group(1)
    return recorded


def record_sha256(folder, filename, digest):
    recorded = {**read_sha256s(folder), filename: digest}
    lines = "".join(f"{recorded[name]}  {name}\n" for name in sorted(recorded))
    temporary = Path(folder) / (SHA256_FILE + ".incomplete")
    temporary.write_text(lines, encoding="utf-8")
    os.replace(temporary, Path(folder) / SHA256_FILE)          # never a half-written record


def verify_release(folder):
    """Check every recorded file against its sha256; HubError naming the first that differs."""
    for filename, expected in read_sha256s(folder).items():
        path = Path(folder) / filename
        if path.is_file() and sha256_of(path) != expected:
            raise HubError(f"{path} changed since it was downloaded (sha256 differs from {SHA256_FILE}); "
                           "delete it and run the download again")


# ---------------------------------------------------------------- download

def download_openai_release(name, cache_dir=None, endpoint=None, retries=4, backoff=0.5, progress=True,
                            read_timeout_s=READ_TIMEOUT_S, deadline_s=None):
    """Download OpenAI's release `name` ('124M', ..., or 'gpt2', ...) into the cache; return its folder.

    Files already there are checked against SHA256SUMS, not fetched again; a ``.incomplete``
    file left by an earlier run is continued. `retries`: failed tries in a row allowed per file
    (a try that made progress resets the count), waiting ``backoff * 2**(n-1)`` s before the n-th.
    The bytes are fetched by `minigpt2.weights.download.download_file` (locks, deadlines, limits).
    """
    size = release_size(name)
    folder = release_folder(size, cache_dir)
    base = openai_endpoint(endpoint)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise HubError(f"cannot create the cache folder {folder}: {error.strerror or error}") from None
    verify_release(folder)

    def record(remote, partial):      # OpenAI publishes no checksums: ours are taken on first download
        verify_file(remote, partial)  # the size, and that the .json files parse
        record_sha256(folder, remote.filename, sha256_of(partial))

    with new_session() as session:
        for filename in RELEASE_FILES:
            final = folder / filename
            if final.is_file():
                if filename not in read_sha256s(folder):          # e.g. copied in by hand: record it now
                    record_sha256(folder, filename, sha256_of(final))
                continue
            url = f"{base}/models/{size}/{filename}"
            remote = RemoteFile(filename, url, _remote_size(session, url, retries, backoff, read_timeout_s), None)
            download_file(session, remote, folder, retries=retries, backoff=backoff, progress=progress,
                          read_timeout_s=read_timeout_s, deadline_s=deadline_s, verify=record,
                          mirror_variable=ENDPOINT_ENV)
    return folder


def _remote_size(session, url, retries, backoff, read_timeout_s):
    """Content-Length of a HEAD (retried like a download): the size the finished file must have."""
    import requests

    failures = 0
    while True:
        try:
            response = session.head(url, allow_redirects=True, timeout=(CONNECT_TIMEOUT_S, read_timeout_s))
        except (requests.ConnectionError, requests.Timeout) as error:
            failures += 1
            if host_unknown(error) or failures > retries:
                raise network_error(url, error, failures if failures > 1 else None, ENDPOINT_ENV) from None
            sleep_before_retry(backoff, failures)
            continue
        if response.status_code in RETRY_STATUS and failures < retries:
            failures += 1
            sleep_before_retry(backoff, failures, response)
            continue
        if response.status_code >= 400:
            raise _status_error(response.status_code, url)
        length = response.headers.get("Content-Length", "")
        if not length.isdigit():
            raise HubError(f"{url}: the server gives no Content-Length, so the download cannot be checked")
        return int(length)


def _status_error(status, url):
    if status == 404:
        return HubError(f"{url} not found (HTTP 404): is {ENDPOINT_ENV} (or endpoint=) a mirror of "
                        "OpenAI's storage, with models/<size>/<file>?")
    return HubError(f"HTTP {status} from {url}")


# ---------------------------------------------------------------- convert

def convert_to_hf(release, out_folder):
    """Write an OpenAI release folder as a Hugging Face one: config.json + model.safetensors (float32),
    and the tokenizer as vocab.json + merges.txt (the same files as encoder.json + vocab.bpe).
    transformers' GPT2LMHeadModel.from_pretrained(out_folder) loads it. Returns out_folder."""
    from minigpt2.weights.safetensors import save_file
    from minigpt2.weights.tf_checkpoint import load_openai_release

    out = Path(out_folder)
    if out.resolve() == Path(release).resolve():
        raise ValueError(f"OUT_FOLDER is the release's own folder {out}; pick a new folder")
    if (out / "model.safetensors").exists():
        raise ValueError(f"{out / 'model.safetensors'} already exists; pick a new folder")
    config, weights = load_openai_release(release)
    config.extra.setdefault("architectures", ["GPT2LMHeadModel"])
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, out / "model.safetensors")
    config.save_pretrained(out)
    for source, target in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")):
        if (Path(release) / source).is_file():
            shutil.copyfile(Path(release) / source, out / target)
    return out
