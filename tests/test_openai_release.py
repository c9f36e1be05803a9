"""minigpt2.weights.openai_release against a loopback server laid out like OpenAI's storage.

    {endpoint}/models/124M/checkpoint, encoder.json, hparams.json, model.ckpt.data-00000-of-00001,
                          model.ckpt.index, model.ckpt.meta, vocab.bpe

The files served are the TF-written fixture (tests/fixtures/openai_tiny) plus small stand-ins for
the tokenizer and the graph; never the real network.
"""

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from conftest import FIXTURES_DIR, GPT2_VOCAB_DIR
from minigpt2 import GPT2LMHeadModel, GPT2Tokenizer
from minigpt2.weights.hub import HubError
from minigpt2.weights import openai_release

TINY = FIXTURES_DIR / "openai_tiny"
DATA = "model.ckpt.data-00000-of-00001"


def release_files():
    files = {name: (TINY / name).read_bytes() for name in
             ("checkpoint", "hparams.json", "model.ckpt.index", DATA)}
    files["model.ckpt.meta"] = b"\x0a\x00graph-def-stand-in" * 10     # nothing reads the graph
    files["encoder.json"] = (GPT2_VOCAB_DIR / "encoder.json").read_bytes()
    files["vocab.bpe"] = (GPT2_VOCAB_DIR / "vocab.bpe").read_bytes()
    return files


class FakeStorage:
    """Static files at /models/<size>/<name>; HEAD gives Content-Length; GET honours Range: bytes=N-.
    fail(name, kind, times): 'drop' (send half the body, hang up) or an HTTP status like '500'."""

    def __init__(self, files, size="124M"):
        self.files = {f"/models/{size}/{name}": data for name, data in files.items()}
        self.log, self.faults = [], {}
        storage = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                storage.answer(self, body=False)

            def do_GET(self):
                storage.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def fail(self, name, kind, times=1):
        self.faults[name] = [kind, times]

    def gets(self, name):
        return [r for r in self.log if r[0] == "GET" and r[1].endswith("/" + name)]

    def answer(self, handler, body):
        path, name = handler.path, handler.path.rsplit("/", 1)[-1]
        self.log.append((handler.command, path, handler.headers.get("Range")))
        fault = self.faults.get(name)
        kind = None
        if fault and fault[1] > 0 and (body or fault[0] != "drop"):
            fault[1] -= 1
            kind = fault[0]
        if kind and kind.isdigit() or path not in self.files:
            status = int(kind) if kind else 404
            handler.send_response(status)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        data = self.files[path]
        start = int(handler.headers.get("Range", "bytes=0-")[6:].split("-")[0])
        part = data[start:]
        handler.send_response(206 if start else 200)
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.send_header("Content-Length", str(len(part)))
        handler.end_headers()
        if body:
            handler.wfile.write(part[:len(part) // 2] if kind == "drop" else part)
            if kind == "drop":
                handler.close_connection = True

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def storage():
    server = FakeStorage(release_files())
    yield server
    server.close()


def download(storage, tmp_path, name="124M", **kwargs):
    return openai_release.download_openai_release(name, cache_dir=tmp_path / "cache", endpoint=storage.url,
                                                  backoff=0, progress=False, **kwargs)


def test_download_the_release_and_load_it(storage, tmp_path):
    folder = download(storage, tmp_path)
    assert folder == tmp_path / "cache" / "openai-124M"
    for name, data in release_files().items():
        assert (folder / name).read_bytes() == data
    assert not list(folder.glob("*.incomplete"))
    # OpenAI publishes no checksums: ours are recorded, in sha256sum's format
    recorded = openai_release.read_sha256s(folder)
    assert recorded == {name: hashlib.sha256(data).hexdigest() for name, data in release_files().items()}
    assert (folder / "SHA256SUMS").read_text().splitlines()[0].endswith("  checkpoint")
    model = GPT2LMHeadModel.from_pretrained(folder, backend="numpy")
    assert model([[1, 2, 3]]).logits.shape == (1, 3, 96)
    assert GPT2Tokenizer.from_pretrained(folder).encode("Hello world") == [15496, 995]


def test_hf_names_map_to_the_sizes():
    assert [openai_release.release_size(n) for n in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")] == \
        ["124M", "355M", "774M", "1558M"]
    with pytest.raises(ValueError, match="unknown OpenAI release 'distilgpt2'.*124M, 355M, 774M, 1558M"):
        openai_release.release_size("distilgpt2")


def test_endpoint_from_the_environment(storage, tmp_path, monkeypatch):
    monkeypatch.setenv(openai_release.ENDPOINT_ENV, storage.url)
    folder = openai_release.download_openai_release("gpt2", cache_dir=tmp_path / "c", progress=False)
    assert (folder / DATA).read_bytes() == release_files()[DATA]


def test_second_run_fetches_nothing_and_checks_the_recorded_sha256(storage, tmp_path):
    folder = download(storage, tmp_path)
    storage.log.clear()
    download(storage, tmp_path)
    assert storage.log == []
    data = bytearray((folder / DATA).read_bytes())
    data[100] ^= 1
    (folder / DATA).write_bytes(bytes(data))
    with pytest.raises(HubError, match=rf"{DATA} changed since it was downloaded"):
        download(storage, tmp_path)


def test_dropped_connection_resumes_with_range(storage, tmp_path):
    storage.fail("encoder.json", "drop")          # 1 MB: the first half arrives in several chunks
    folder = download(storage, tmp_path)
    gets = storage.gets("encoder.json")
    assert len(gets) == 2 and gets[0][2] is None
    resumed_at = int(gets[1][2].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= len(release_files()["encoder.json"]) // 2
    assert (folder / "encoder.json").read_bytes() == release_files()["encoder.json"]


def test_incomplete_file_of_an_earlier_run_is_continued(storage, tmp_path):
    folder = tmp_path / "cache" / "openai-124M"
    folder.mkdir(parents=True)
    (folder / (DATA + ".incomplete")).write_bytes(release_files()[DATA][:1000])
    download(storage, tmp_path)
    assert [r[2] for r in storage.gets(DATA)] == ["bytes=1000-"]
    assert (folder / DATA).read_bytes() == release_files()[DATA]


def test_a_too_long_partial_file_starts_again(storage, tmp_path):
    folder = tmp_path / "cache" / "openai-124M"
    folder.mkdir(parents=True)
    (folder / (DATA + ".incomplete")).write_bytes(b"x" * (len(release_files()[DATA]) + 5))
    download(storage, tmp_path)
    assert (folder / DATA).read_bytes() == release_files()[DATA]


def test_server_errors_are_retried_then_reported(storage, tmp_path):
    storage.fail("hparams.json", "503", times=2)
    folder = download(storage, tmp_path)
    assert (folder / "hparams.json").is_file()
    storage.fail("vocab.bpe", "404")
    with pytest.raises(HubError, match=r"models/124M/vocab.bpe not found \(HTTP 404\)"):
        download(storage, tmp_path / "other")
    assert not (tmp_path / "other" / "cache" / "openai-124M" / "vocab.bpe").exists()
    with pytest.raises(HubError, match=r"models/355M/checkpoint not found \(HTTP 404\)"):
        download(storage, tmp_path, name="355M")      # the server has no 355M


def test_offline_is_a_clear_error(tmp_path):
    # a port nothing listens on: connection refused, retried, then one line
    with pytest.raises(HubError, match=r"cannot download http://127\.0\.0\.1:9/models/124M/checkpoint after "
                                       r"2 tries .*No network\?"):
        openai_release.download_openai_release("124M", cache_dir=tmp_path, endpoint="http://127.0.0.1:9",
                                               retries=1, backoff=0, progress=False)


def test_download_command_with_source_openai(storage, tmp_path, monkeypatch, capsys):
    from minigpt2.cli import main

    monkeypatch.setenv(openai_release.ENDPOINT_ENV, storage.url)
    assert main(["download", "124M", "--source", "openai", "--cache-dir", str(tmp_path), "--quiet"]) == 0
    assert f"124M: {tmp_path / 'openai-124M'}" in capsys.readouterr().out
    logits = GPT2LMHeadModel.from_pretrained(tmp_path / "openai-124M", backend="numpy")([[4, 5]]).logits
    reference = GPT2LMHeadModel.from_pretrained(TINY, backend="numpy")([[4, 5]]).logits
    np.testing.assert_array_equal(logits, reference)
