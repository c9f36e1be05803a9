"""minigpt2.weights.hub against a loopback fake hub (tests/fake_hub.py): never the real network.

Expected bytes are the files the fake server holds; expected hashes are computed here with hashlib.
"""

import hashlib
import json
import os
import socket

import numpy as np
import pytest

from minigpt2 import cli
from minigpt2.weights import download as http, hub
from minigpt2.weights.safetensors import save_file

from fake_hub import FakeHub

REPO = "openai-community/gpt2"


def make_files(tmp_path, n_floats=60_000, optional=True):
    """config.json, a small model.safetensors (~240 kB), vocab.json, merges.txt (+ the two optional configs)."""
    rng = np.random.default_rng(0)
    weights = tmp_path / "src.safetensors"
    save_file({"wte.weight": rng.standard_normal((n_floats // 100, 100)).astype(np.float32),
               "ln_f.bias": np.zeros(100, np.float32)}, weights)
    files = {
        "config.json": json.dumps({"model_type": "gpt2", "n_embd": 100, "n_layer": 0}).encode(),
        "model.safetensors": weights.read_bytes(),
        "vocab.json": json.dumps({"a": 0, "b": 1, "ab": 2}).encode(),
        "merges.txt": b"#version: 0.2\na b\n",
    }
    if optional:
        files["tokenizer_config.json"] = b'{"model_max_length": 1024}'
        files["generation_config.json"] = b'{"bos_token_id": 50256}'
    return files


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    # No real cache of the machine leaks in, and nothing leaks out.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("MINIGPT2_HOME", str(tmp_path / "minigpt2-home"))
    server = FakeHub()
    server.add_repo(REPO, make_files(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.close()


def download(fake_hub, tmp_path, name="gpt2", **kwargs):
    kwargs = {"cache_dir": tmp_path / "cache", "endpoint": fake_hub.url, "backoff": 0.0,
              "progress": False, **kwargs}
    return hub.download_model(name, **kwargs)


def assert_identical(folder, files):
    for filename, data in files.items():
        assert (folder / filename).read_bytes() == data, filename
    assert not list(folder.glob("*.incomplete"))


# ---------------------------------------------------------------- a clean download


def test_download_is_byte_identical_and_uses_the_hub_protocol(fake_hub, tmp_path):
    folder = download(fake_hub, tmp_path)
    assert folder == tmp_path / "cache" / "gpt2"
    assert_identical(folder, fake_hub.repos[REPO])
    # Weights: HEAD on /resolve (redirect not followed), then the bytes from the redirect target.
    heads = fake_hub.requests_for("model.safetensors", "HEAD")
    assert [r.path for r in heads] == [f"/{REPO}/resolve/main/model.safetensors"]
    assert len(fake_hub.content_gets("model.safetensors")) == 1
    # Never a pickled checkpoint.
    assert not any(r.filename and r.filename.endswith(".bin") for r in fake_hub.log)


def test_second_download_fetches_nothing(fake_hub, tmp_path):
    download(fake_hub, tmp_path)
    fake_hub.log.clear()
    folder = download(fake_hub, tmp_path)
    assert fake_hub.log == []
    assert hub.resolve_model_folder("gpt2", cache_dir=tmp_path / "cache") == folder
    assert fake_hub.log == []


def test_optional_file_missing_is_not_an_error(fake_hub, tmp_path):
    files = make_files(tmp_path, optional=False)
    fake_hub.add_repo("someone/tiny", files)
    folder = download(fake_hub, tmp_path, "someone/tiny")
    assert folder.name == "someone--tiny"
    assert_identical(folder, files)
    assert not (folder / "generation_config.json").exists()
    assert not (folder / "tokenizer_config.json").exists()


def test_renamed_repository_is_followed(fake_hub, tmp_path):
    fake_hub.add_alias("someone/old-name", REPO)
    folder = download(fake_hub, tmp_path, "someone/old-name")
    assert_identical(folder, fake_hub.repos[REPO])
    assert f"/{REPO}/resolve/main/config.json" in [r.path for r in fake_hub.requests_for("config.json", "HEAD")]


def test_download_respects_hf_hub_offline(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.HubError, match="HF_HUB_OFFLINE=1 is set"):
        download(fake_hub, tmp_path)
    assert fake_hub.log == []


def test_resolve_downloads_on_first_use(fake_hub, tmp_path):
    # HF_ENDPOINT (set by the fixture) points at the fake hub; MINIGPT2_HOME is the cache.
    folder = hub.resolve_model_folder("gpt2")
    assert folder == tmp_path / "minigpt2-home" / "gpt2"
    assert_identical(folder, fake_hub.repos[REPO])


def test_official_repo_id_shares_the_short_folder(fake_hub, tmp_path):
    assert download(fake_hub, tmp_path, REPO) == tmp_path / "cache" / "gpt2"


def test_revision_gets_its_own_folder(fake_hub, tmp_path):
    folder = download(fake_hub, tmp_path, revision="v1.0")
    assert folder.name == "gpt2@v1.0"
    assert fake_hub.requests_for("config.json")[0].path == f"/{REPO}/resolve/v1.0/config.json"


# ---------------------------------------------------------------- faults


def test_dropped_connection_resumes_with_range(fake_hub, tmp_path):
    fake_hub.fail("model.safetensors", "drop")
    folder = download(fake_hub, tmp_path)
    assert_identical(folder, fake_hub.repos[REPO])
    gets = fake_hub.content_gets("model.safetensors")
    size = len(fake_hub.repos[REPO]["model.safetensors"])
    assert len(gets) == 2
    assert gets[0].range is None
    resumed_at = int(gets[1].range.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at < size


def test_partial_file_from_an_earlier_run_is_continued(fake_hub, tmp_path):
    data = fake_hub.repos[REPO]["model.safetensors"]
    folder = tmp_path / "cache" / "gpt2"
    folder.mkdir(parents=True)
    (folder / "model.safetensors.incomplete").write_bytes(data[:1000])
    download(fake_hub, tmp_path)
    assert [r.range for r in fake_hub.content_gets("model.safetensors")] == ["bytes=1000-"]
    assert_identical(folder, fake_hub.repos[REPO])


def test_server_ignoring_range_restarts_the_file(fake_hub, tmp_path):
    data = fake_hub.repos[REPO]["model.safetensors"]
    folder = tmp_path / "cache" / "gpt2"
    folder.mkdir(parents=True)
    (folder / "model.safetensors.incomplete").write_bytes(data[:1000])
    fake_hub.fail("model.safetensors", "ignore_range")
    download(fake_hub, tmp_path)
    assert_identical(folder, fake_hub.repos[REPO])


@pytest.mark.parametrize("filename", ["model.safetensors", "config.json", "merges.txt"])
def test_corrupted_bytes_are_refused_and_removed(fake_hub, tmp_path, filename):
    fake_hub.fail(filename, "corrupt")
    with pytest.raises(hub.HubError, match=f"{filename} .* corrupt .*checksum mismatch.*removed"):
        download(fake_hub, tmp_path)
    folder = tmp_path / "cache" / "gpt2"
    assert not (folder / filename).exists()
    assert not (folder / (filename + ".incomplete")).exists()
    # Running again fetches a good copy.
    assert_identical(download(fake_hub, tmp_path), fake_hub.repos[REPO])


def test_invalid_safetensors_with_matching_hash_is_refused(fake_hub, tmp_path):
    files = make_files(tmp_path)
    files["model.safetensors"] = b"\xff" * 64  # the hash matches (the server says so) but it is no safetensors
    fake_hub.add_repo("someone/broken", files)
    with pytest.raises(hub.HubError, match="not a valid safetensors file"):
        download(fake_hub, tmp_path, "someone/broken")
    assert not list((tmp_path / "cache" / "someone--broken").glob("model.safetensors*"))


def test_server_error_then_success(fake_hub, tmp_path):
    fake_hub.fail("config.json", 500)               # on the HEAD
    fake_hub.fail("model.safetensors", 503)         # on the HEAD
    fake_hub.fail("model.safetensors", 500)         # on the GET of /resolve
    assert_identical(download(fake_hub, tmp_path), fake_hub.repos[REPO])


def test_server_error_gives_up_after_retries(fake_hub, tmp_path):
    fake_hub.fail("config.json", 500, times=100)
    with pytest.raises(hub.HubError, match=r"HTTP 500 .* after 3 tries.*failing"):
        download(fake_hub, tmp_path, retries=2)
    assert len(fake_hub.requests_for("config.json")) == 3


def test_rate_limited(fake_hub, tmp_path):
    fake_hub.fail("config.json", 429, times=100)
    with pytest.raises(hub.HubError, match="HTTP 429 .*rate-limited"):
        download(fake_hub, tmp_path, retries=1)


@pytest.mark.parametrize("status", [401, 403])
def test_forbidden(fake_hub, tmp_path, status):
    fake_hub.fail("config.json", status)
    with pytest.raises(hub.HubError, match=f"access denied .*HTTP {status}.*HF_TOKEN"):
        download(fake_hub, tmp_path)
    assert len(fake_hub.requests_for("config.json")) == 1  # not retried


def test_unknown_repository(fake_hub, tmp_path):
    with pytest.raises(hub.HubError, match="no model repository 'someone/missing' .HTTP 404"):
        download(fake_hub, tmp_path, "someone/missing")


def test_pickled_only_repository_is_refused(fake_hub, tmp_path):
    fake_hub.add_repo("someone/old", {"config.json": b"{}", "pytorch_model.bin": b"pickle"})
    with pytest.raises(hub.HubError, match="no model.safetensors.*pickled .*refused"):
        download(fake_hub, tmp_path, "someone/old")
    assert fake_hub.requests_for("pytorch_model.bin") == []


def test_no_network(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(hub.HubError, match="Connection refused.*No network.*HF_HUB_OFFLINE=1"):
        hub.download_model("gpt2", cache_dir=tmp_path, endpoint=f"http://127.0.0.1:{closed_port}",
                           retries=1, backoff=0.0)


def test_unknown_host_fails_at_once_without_retrying(tmp_path, monkeypatch):
    # ".invalid" never resolves (RFC 2606): no network or a mistyped HF_ENDPOINT looks like this,
    # and waiting through the backoff would only delay the CLI's offline fallback.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    sleeps = []
    monkeypatch.setattr(http, "sleep_before_retry", lambda *args: sleeps.append(args))
    with pytest.raises(hub.HubError, match="cannot download http://hub.invalid/.*No network"):
        hub.download_model("gpt2", cache_dir=tmp_path, endpoint="http://hub.invalid", retries=4)
    assert sleeps == []


def test_not_enough_disk_space(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setattr(hub.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 1000})())
    with pytest.raises(hub.HubError, match="not enough disk space.*--cache-dir"):
        download(fake_hub, tmp_path)
    assert fake_hub.content_gets("model.safetensors") == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_while_writing():
    class Raw:
        def read1(self, size, decode_content):
            return b"x" * 10

    class Body:
        raw = Raw()

    import time
    from tqdm import tqdm
    from pathlib import Path
    with pytest.raises(hub.HubError, match="disk full while writing"), open("/dev/full", "wb", buffering=0) as out:
        http.write_body(Body(), out, Path("/dev/full"), 1 << 20, tqdm(disable=True), time.monotonic() + 60)


# ---------------------------------------------------------------- names and local lookups


@pytest.mark.parametrize("name", ["../evil", "a/../../b", "/tmp/x", "a\\b", "a//b", "", "a/b/c", ".hidden",
                                  "x--y", "-rf"])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError):
        hub.download_model(name, cache_dir=tmp_path / "cache", endpoint="http://127.0.0.1:9")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("name", ["../evil", "/no/such/folder", "a/b/c"])
def test_resolve_refuses_bad_names_with_one_line(tmp_path, name):
    with pytest.raises(ValueError, match="neither an existing folder nor a model name") as error:
        hub.resolve_model_folder(name, cache_dir=tmp_path, local_files_only=True)
    assert "\n" not in str(error.value)


def test_unknown_short_name(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'gpt3'.*gpt2-medium"):
        hub.resolve_model_folder("gpt3", cache_dir=tmp_path)


def test_bad_revision_refused(tmp_path):
    with pytest.raises(ValueError, match="invalid revision"):
        hub.download_model("gpt2", cache_dir=tmp_path, revision="../x", endpoint="http://127.0.0.1:9")


def test_existing_folder_is_used_as_is(tmp_path):
    assert hub.resolve_model_folder(tmp_path) == tmp_path
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        hub.resolve_model_folder(tmp_path / "f.txt")


def test_bundled_models(tmp_path, monkeypatch):
    (tmp_path / "tiny-test" / "config.json").parent.mkdir()
    (tmp_path / "tiny-test" / "config.json").write_text("{}")
    (tmp_path / "not-a-model").mkdir()
    monkeypatch.setattr(hub, "BUNDLED_MODELS_DIR", tmp_path)
    assert hub.bundled_models() == {"tiny-test": tmp_path / "tiny-test"}
    assert hub.resolve_model_folder("tiny-test", local_files_only=True) == tmp_path / "tiny-test"
    assert hub.download_model("tiny-test", endpoint="http://127.0.0.1:9") == tmp_path / "tiny-test"


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_offline_says_what_to_run(fake_hub, tmp_path, monkeypatch, how):
    if how == "environment":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.HubError, match=r"downloading is off .*download_weights.py gpt2") as error:
        hub.resolve_model_folder("gpt2", cache_dir=tmp_path / "cache", local_files_only=(how == "argument"))
    assert ("local_files_only=True" if how == "argument" else "HF_HUB_OFFLINE=1") in str(error.value)
    assert fake_hub.log == []


def make_hf_snapshot(hub_cache, repo_id, commit, ref="main"):
    repo = hub_cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"weights")
    if ref:
        (repo / "refs").mkdir()
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.mark.parametrize("repo_id", ["openai-community/gpt2", "gpt2"])
def test_huggingface_cache_is_reused(fake_hub, tmp_path, repo_id):
    snapshot = make_hf_snapshot(tmp_path / "hf-home" / "hub", repo_id, "a" * 40)
    assert hub.resolve_model_folder("gpt2", cache_dir=tmp_path / "cache") == snapshot
    assert hub.resolve_model_folder("gpt2", local_files_only=True) == snapshot
    assert fake_hub.log == []


def test_huggingface_cache_follows_the_ref(fake_hub, tmp_path, monkeypatch):
    hub_cache = tmp_path / "elsewhere"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    make_hf_snapshot(hub_cache, REPO, "b" * 40, ref=None)        # an older snapshot
    current = make_hf_snapshot(hub_cache, REPO, "c" * 40, ref="main")
    assert hub.resolve_model_folder("gpt2", local_files_only=True) == current


def test_incomplete_huggingface_snapshot_is_not_used(fake_hub, tmp_path):
    snapshot = make_hf_snapshot(tmp_path / "hf-home" / "hub", REPO, "d" * 40)
    (snapshot / "model.safetensors").unlink()
    with pytest.raises(hub.HubError, match="downloading is off"):
        hub.resolve_model_folder("gpt2", local_files_only=True)


def test_transformers_cache_dir_is_searched(fake_hub, tmp_path):
    # cache_dir= as transformers users pass it: a hub cache with models--owner--name inside.
    snapshot = make_hf_snapshot(tmp_path / "tf-cache", REPO, "e" * 40)
    assert hub.resolve_model_folder("gpt2", cache_dir=tmp_path / "tf-cache", local_files_only=True) == snapshot


def test_file_url_is_joined_with_slashes():
    assert (hub.file_url("openai-community/gpt2", "config.json", "main", "https://example.org/")
            == "https://example.org/openai-community/gpt2/resolve/main/config.json")
    assert hub.file_url("a/b", "model.safetensors", "refs/pr/1", "https://x").endswith(
        "/a/b/resolve/refs%2Fpr%2F1/model.safetensors")


def test_etag_forms():
    sha256 = hashlib.sha256(b"x").hexdigest()
    assert http.normalize_etag(f'"{sha256.upper()}"') == sha256
    assert http.normalize_etag('W/"' + "a" * 40 + '"') == "a" * 40
    assert http.normalize_etag('"abc-123"') is None  # not a digest we can check: size only
    assert http.normalize_etag(None) is None


def test_official_models_table():
    assert list(hub.OFFICIAL_MODELS) == ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2"]
    assert hub.OFFICIAL_MODELS["distilgpt2"].repo_id == "distilbert/distilgpt2"
    assert all(m.repo_id.startswith("openai-community/") for n, m in hub.OFFICIAL_MODELS.items() if n != "distilgpt2")


# ---------------------------------------------------------------- the command line


def test_cli_lists_the_official_and_bundled_models(capsys, tmp_path):
    assert cli.main(["download", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for model in hub.OFFICIAL_MODELS.values():
        assert model.name in out and model.repo_id in out
    bundled = out.split("bundled models")[1]
    assert "tiny-shakespeare" in bundled


def test_cli_downloads(fake_hub, tmp_path, capsys):
    assert cli.main(["download", "gpt2", "--cache-dir", str(tmp_path / "c"), "--quiet"]) == 0
    assert_identical(tmp_path / "c" / "gpt2", fake_hub.repos[REPO])
    assert str(tmp_path / "c" / "gpt2") in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["download", "../x"], ["download", "someone/missing", "--quiet"]])
def test_cli_errors_are_one_line(fake_hub, tmp_path, capsys, argv):
    assert cli.main(argv + ["--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("minigpt2: error: ") and err.count("\n") == 1 and "Traceback" not in err


# ---------------------------------------------------------------- end to end: hub -> model


def test_downloaded_model_matches_transformers(fake_hub, tmp_path, monkeypatch):
    """A random transformers model served by the fake hub loads by name, and its logits match transformers."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from minigpt2 import GPT2LMHeadModel

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=96, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    reference = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # random init has std 0.02: scale up so a wrong op would show
        for parameter in reference.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    source = tmp_path / "source"
    reference.save_pretrained(source)  # config.json + model.safetensors
    fake_hub.add_repo("someone/tiny-gpt2", {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()})

    hub.download_model("someone/tiny-gpt2", cache_dir=tmp_path / "cache", progress=False)  # via HF_ENDPOINT
    fake_hub.log.clear()
    model = GPT2LMHeadModel.from_pretrained("someone/tiny-gpt2", backend="numpy", cache_dir=tmp_path / "cache")
    assert fake_hub.log == []  # loaded from the cache, nothing fetched again

    ids = np.array([[1, 5, 17, 42, 95, 0, 3]])
    logits = model(ids).logits
    with torch.no_grad():
        expected = reference(torch.tensor(ids)).logits.numpy()
    assert logits.shape == expected.shape
    assert np.max(np.abs(logits - expected)) / np.max(np.abs(expected)) < 1e-5


# ---------------------------------------------------------------- hardening (issue 20: 2, 5, 6)


def test_two_processes_downloading_one_file_do_not_corrupt_it(fake_hub, tmp_path):
    """The second download starts while the first is half way through the weights: it waits for the
    file's lock, then reuses the verified file. (Threads, each with its own lock descriptor: flock
    treats them as it treats two processes.)"""
    import threading
    import time

    data = fake_hub.repos[REPO]["model.safetensors"]
    fake_hub.fail("model.safetensors", "pause")     # the first GET sends half, waits, sends the rest
    errors, folders = [], []

    def run():
        try:
            folders.append(download(fake_hub, tmp_path))
        except Exception as error:      # noqa: BLE001 - reported by the asserts below
            errors.append(error)

    first = threading.Thread(target=run)
    first.start()
    partial = tmp_path / "cache" / "gpt2" / "model.safetensors.incomplete"
    for _ in range(200):                 # until the first has written part of the weights
        if partial.is_file() and partial.stat().st_size > 0:
            break
        time.sleep(0.01)
    second = threading.Thread(target=run)
    second.start()
    first.join()
    second.join()
    assert errors == []
    assert folders == [tmp_path / "cache" / "gpt2"] * 2
    assert (folders[0] / "model.safetensors").read_bytes() == data
    assert len(fake_hub.content_gets("model.safetensors")) == 1   # the second reused the first's file


def test_a_planted_symlink_is_not_written_through(fake_hub, tmp_path):
    folder = tmp_path / "cache" / "gpt2"
    folder.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (folder / "model.safetensors.incomplete").symlink_to(victim)
    with pytest.raises(hub.HubError, match="model.safetensors.incomplete is a symbolic link.*never writes"):
        download(fake_hub, tmp_path)
    assert victim.read_bytes() == b"precious"
    assert fake_hub.content_gets("model.safetensors") == []


def test_a_dangling_symlink_is_not_followed_either(fake_hub, tmp_path):
    folder = tmp_path / "cache" / "gpt2"
    folder.mkdir(parents=True)
    target = tmp_path / "created-through-the-link"
    (folder / "model.safetensors.incomplete").symlink_to(target)
    with pytest.raises(hub.HubError, match="symbolic link"):
        download(fake_hub, tmp_path)
    assert not target.exists()


def test_revisions_with_slashes_get_their_own_folders():
    assert hub.cache_folder_name("gpt2", "refs/pr/1") != hub.cache_folder_name("gpt2", "refs--pr--1")
    assert hub.cache_folder_name("gpt2", "refs/pr/1") == "gpt2@refs%2Fpr%2F1"
    assert hub.cache_folder_name("gpt2", "v1.0") == "gpt2@v1.0"


def test_more_than_the_announced_size_is_never_written(fake_hub, tmp_path, monkeypatch):
    written = []
    real_open = http.open_partial if hasattr(http, "open_partial") else None

    def spy(partial, append):            # record the size of every write to the weights' partial file
        out = real_open(partial, append)
        if partial.name.startswith("model.safetensors"):
            real_write = out.write
            out.write = lambda block: written.append(len(block)) or real_write(block)
        return out

    if real_open is not None:
        monkeypatch.setattr(http, "open_partial", spy)
    fake_hub.fail("model.safetensors", "oversize")   # 5 MB more than the 240 kB the HEAD announced
    folder = download(fake_hub, tmp_path)
    data = fake_hub.repos[REPO]["model.safetensors"]
    assert (folder / "model.safetensors").read_bytes() == data
    assert sum(written) == len(data)


def test_a_compressed_body_is_refused(fake_hub, tmp_path):
    fake_hub.fail("config.json", "gzip")
    with pytest.raises(hub.HubError, match="Content-Encoding 'gzip' though 'identity' was asked"):
        download(fake_hub, tmp_path)
    assert not (tmp_path / "cache" / "gpt2" / "config.json").exists()


def test_short_drops_count_as_progress(fake_hub, tmp_path):
    # 30 kB per connection, then a hang-up: each try keeps what it got, so 240 kB arrive in 9 tries
    # though only 2 failures in a row are allowed.
    fake_hub.fail("model.safetensors", "drop_short", times=100)
    folder = download(fake_hub, tmp_path, retries=2)
    assert (folder / "model.safetensors").read_bytes() == fake_hub.repos[REPO]["model.safetensors"]
    ranges = [r.range for r in fake_hub.content_gets("model.safetensors")]
    assert ranges[:3] == [None, "bytes=30000-", "bytes=60000-"]


def test_a_dripping_server_meets_the_deadline(fake_hub, tmp_path):
    import time

    fake_hub.fail("config.json", "slow", times=100)    # 1 byte per 50 ms
    started = time.monotonic()
    with pytest.raises(hub.HubError, match="config.json: the download passed its deadline"):
        download(fake_hub, tmp_path, deadline_s=1.0)
    assert time.monotonic() - started < 4


def test_the_read_timeout_is_a_setting(fake_hub, tmp_path):
    import time

    fake_hub.fail("model.safetensors", "pause")         # half, then PAUSE_S (1 s) of silence
    started = time.monotonic()
    folder = download(fake_hub, tmp_path, read_timeout_s=0.3)   # times out, resumes with Range
    assert time.monotonic() - started < 3
    assert (folder / "model.safetensors").read_bytes() == fake_hub.repos[REPO]["model.safetensors"]
    assert fake_hub.content_gets("model.safetensors")[1].range.startswith("bytes=")


def test_an_announced_size_of_zero_is_a_clear_error(fake_hub, tmp_path):
    files = make_files(tmp_path)
    files["config.json"] = b""
    fake_hub.add_repo("someone/empty", files)
    with pytest.raises(hub.HubError, match=r"config.json announces an empty file \(0 bytes\)"):
        download(fake_hub, tmp_path, "someone/empty")


def test_the_token_goes_only_to_the_endpoints_host(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    port = fake_hub.url.rsplit(":", 1)[1]
    # "//localhost:PORT/..." is the same server under another host name: to the client, another host.
    fake_hub.add_alias("someone/moved", REPO, host=f"//localhost:{port}")
    folder = download(fake_hub, tmp_path, "someone/moved")
    assert_identical(folder, fake_hub.repos[REPO])
    to_endpoint = [r for r in fake_hub.log if r.host == f"127.0.0.1:{port}" and "/cdn/" not in r.path]
    elsewhere = [r for r in fake_hub.log if r.host == f"localhost:{port}"]
    assert to_endpoint and elsewhere
    assert all(r.authorization == "Bearer hf_secret" for r in to_endpoint)
    assert [r.authorization for r in elsewhere] == [None] * len(elsewhere)
