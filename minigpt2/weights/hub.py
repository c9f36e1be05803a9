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

How a download is made safe, the way the hub itself works (the HTTP side is weights/download.py):
  - A HEAD request without following redirects gives the file's size and hash. Large (LFS) files
    answer with a redirect and `X-Linked-Size` / `X-Linked-Etag` (the sha256 of the content).
    Small files answer 200 with `ETag` = their git blob id (sha1 of "blob <size>\\0" + content) and
    `Content-Length`. Whatever the server gives is checked: sha256 for 64 hex digits, the git blob
    sha1 for 40 hex digits, the size. JSON files must also parse, and the weights must pass the
    header validation of `minigpt2.weights.safetensors` (`load_metadata`, the check `load_file` runs).
  - Bytes go to `<file>.incomplete` under a per-file lock; only a verified file is renamed to its
    real name, so a file under a real name is always complete. A bad file is removed.
  - A dropped connection is retried with exponential backoff, continuing with an HTTP `Range`
    request from where the file stopped (also in a later run). The retry count starts again
    whenever a try made progress, so a slow, flaky link still finishes. 429 and 5xx are retried too.
  - Only safetensors weights are fetched: pickled checkpoints (`pytorch_model.bin`) can run code
    when loaded, so they are never downloaded.
"""

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

# HubError, RemoteFile, WEIGHTS_FILE and PICKLED_WEIGHTS are also used as hub.X by callers.
from minigpt2.weights.download import (PICKLED_WEIGHTS, READ_TIMEOUT_S, WEIGHTS_FILE, Auth, HubError,  # noqa: F401
                                       RemoteFile, download_file, head_file, human_bytes, new_session)

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"
BUNDLED_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"

REQUIRED_FILES = ("config.json", WEIGHTS_FILE)
# Downloaded when the repository has them; a 404 for these is not an error.
OPTIONAL_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "generation_config.json")

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
        return human_bytes(self.download_bytes)


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
    """The model's folder name inside the minigpt2 cache: 'gpt2', 'owner--name', 'gpt2@v1', 'gpt2@refs%2Fpr%2F1'.

    A '/' in a revision is written '%2F' (a revision cannot hold '%'), so two revisions never
    share a folder: 'refs/pr/1' and the branch 'refs--pr--1' stay apart.
    """
    repo_id = repo_id_for(name)
    short = {model.repo_id: model.name for model in OFFICIAL_MODELS.values()}
    folder = short.get(repo_id, repo_id.replace("/", "--"))
    if check_revision(revision) != DEFAULT_REVISION:
        folder += "@" + quote(revision, safe="")
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


def hub_endpoint(endpoint=None):
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def file_url(repo_id, filename, revision=DEFAULT_REVISION, endpoint=None):
    """`{endpoint}/{repo_id}/resolve/{revision}/{filename}`, joined with '/' (never os.path.join)."""
    return f"{hub_endpoint(endpoint)}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"


def download_model(name, cache_dir=None, revision=DEFAULT_REVISION, endpoint=None,
                   retries=4, backoff=0.5, progress=True, read_timeout_s=READ_TIMEOUT_S, deadline_s=None):
    """Download `name` ('gpt2' or 'owner/name') into the minigpt2 cache; return its folder.

    Files already complete are not fetched again; a `<file>.incomplete` left by an earlier run is
    continued. `retries` is how many failed tries in a row are allowed per file (a try that makes
    progress resets the count); the n-th retry waits `backoff * 2**(n-1)` seconds.
    `read_timeout_s`: the longest wait for the next bytes; `deadline_s`: the most seconds one file
    may take, retries included (default: an hour, more for big files; see weights/download.py).
    Another process downloading the same file into the same cache is waited for, not raced.
    """
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
    # The token goes only to the endpoint's own host, never to one a redirect names.
    auth = Auth(os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"), hub_endpoint(endpoint))
    with new_session() as session:
        to_fetch = []
        for filename in missing:
            url = file_url(repo_id, filename, revision, endpoint)
            remote = head_file(session, url, filename, auth=auth, required=filename in REQUIRED_FILES,
                               retries=retries, backoff=backoff, repo_id=repo_id, revision=revision,
                               read_timeout_s=read_timeout_s)
            if remote is not None:
                to_fetch.append(remote)
        check_free_space(folder, to_fetch)
        for remote in to_fetch:
            download_file(session, remote, folder, auth=auth, retries=retries, backoff=backoff,
                          progress=progress, read_timeout_s=read_timeout_s, deadline_s=deadline_s)
    return folder


def check_free_space(folder, to_fetch):
    needed = 0
    for remote in to_fetch:
        if remote.size is not None:
            partial = folder / (remote.filename + ".incomplete")
            needed += remote.size - (partial.lstat().st_size if partial.is_file() else 0)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise HubError(
            f"not enough disk space in {folder}: the download needs {human_bytes(needed)}, "
            f"{human_bytes(free)} is free; free some space or choose another folder with --cache-dir"
        )


def describe_official_models(cache_dir=None):
    """Lines listing the five official models: repository id, download size, and whether it is here."""
    lines = [f"{'name':<13} {'params':>6}  {'download':>9}  {'repository':<30} local"]
    for model in OFFICIAL_MODELS.values():
        local = _is_complete(minigpt2_cache_dir(cache_dir) / model.name) or find_in_huggingface_cache(model.name)
        lines.append(f"{model.name:<13} {model.n_params:>6}  {model.download_size:>9}  {model.repo_id:<30} "
                     f"{'yes' if local else '-'}")
    return lines
