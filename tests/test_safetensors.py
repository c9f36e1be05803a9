"""minigpt2.weights.safetensors: round trips, agreement with the `safetensors` package, strict header checks."""

import json
import struct

import numpy as np
import pytest

from minigpt2.weights.safetensors import (SafetensorsFile, bfloat16_to_float32, float32_to_bfloat16,
                                  load_file, load_metadata, save_file)


def _tensors():
    rng = np.random.default_rng(0)
    return {
        "wte.weight": rng.standard_normal((7, 5)).astype(np.float32),
        "h.0.ln_1.bias": rng.standard_normal(5).astype(np.float16),
        "scalar": np.array(3.5, dtype=np.float64),
        "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "flags": np.array([True, False, True]),
    }


def test_round_trip(tmp_path):
    tensors = _tensors()
    path = tmp_path / "t.safetensors"
    save_file(tensors, path, metadata={"format": "pt", "note": "hi"})
    loaded = load_file(path)
    assert sorted(loaded) == sorted(tensors)
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        np.testing.assert_array_equal(loaded[name], array)
    assert load_metadata(path) == {"format": "pt", "note": "hi"}


def test_loaded_arrays_are_read_only_memory_maps(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"w": np.ones((64, 64), np.float32)}, path)
    w = load_file(path)["w"]
    assert not w.flags.writeable
    base = w
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap)          # a view into the file, not a copy
    with pytest.raises(ValueError):
        w[0, 0] = 2.0


def test_data_is_8_byte_aligned(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file(_tensors(), path)
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert n % 8 == 0


def test_bfloat16_conversion_by_hand():
    # 1.0 = 0x3F800000 -> bf16 0x3F80; 1 + 2^-8 is a tie -> rounds to even (0x3F80);
    # 1 + 3*2^-8 -> 0x3F82 (tie, rounds up to even); -2.0 -> 0xC000.
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, -2.0], dtype=np.float32)
    np.testing.assert_array_equal(float32_to_bfloat16(x), [0x3F80, 0x3F80, 0x3F82, 0xC000])
    np.testing.assert_array_equal(bfloat16_to_float32(np.array([0x3F80, 0xC000], np.uint16)), [1.0, -2.0])


def test_bf16_and_f16_as_float32(tmp_path):
    path = tmp_path / "t.safetensors"
    x = np.array([[1.0, -2.5], [0.15625, 3.0]], dtype=np.float32)     # exactly representable
    save_file({"b": x, "h": x.astype(np.float16), "f": x}, path, bf16=["b"])
    f = SafetensorsFile(path)
    assert f.dtype("b") == "BF16" and f.dtype("h") == "F16" and f.dtype("f") == "F32"
    assert f.get("b").dtype == np.uint16                   # raw bits unless asked
    for name in "bhf":
        got = f.get(name, as_float32=True)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, x)


def test_files_written_by_the_safetensors_package_read_back_exactly(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    tensors = _tensors()
    path = tmp_path / "ref.safetensors"
    st.save_file(tensors, str(path), metadata={"format": "np"})
    loaded = load_file(path)
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded[name], array)
    assert load_metadata(path) == {"format": "np"}


def test_our_files_read_by_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    tensors = _tensors()
    path = tmp_path / "ours.safetensors"
    save_file(tensors, path)
    loaded = st.load_file(str(path))
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array)


def test_bf16_written_by_torch_reads_back(tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "bf16.safetensors"
    st.save_file({"x": x.to(torch.bfloat16)}, str(path))
    ours = load_file(path, as_float32=True)["x"]
    np.testing.assert_array_equal(ours, x.to(torch.bfloat16).float().numpy())
    # and our rounding agrees with torch's
    np.testing.assert_array_equal(float32_to_bfloat16(x.numpy()),
                                  x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))


# ---- malformed files -------------------------------------------------------------------------

def _raw_file(path, header, data=b"", header_len=None):
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    n = len(raw) if header_len is None else header_len
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return path


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}


@pytest.mark.parametrize("header, data, match", [
    (GOOD, b"\0" * 11, "'b'.*past the end"),                                   # truncated data
    (GOOD, b"\0" * 13, "after the last tensor"),                                # trailing junk
    ({"a": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown dtype"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "'a'.*needs 12 bytes"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, "shape"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, "data_offsets"),
    ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, "exactly dtype, shape, data_offsets"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "overlaps"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "gap"),
    ({"__metadata__": {"format": 1}}, b"", "__metadata__"),
    ([1, 2], b"", "JSON object"),
    (b"{not json", b"", "not valid UTF-8 JSON"),
    (b"\xff\xfe{}", b"", "not valid UTF-8 JSON"),
])
def test_malformed_headers_are_rejected(tmp_path, header, data, match):
    path = _raw_file(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(ValueError, match=match) as err:
        load_file(path)
    assert "bad.safetensors" in str(err.value)


def test_header_length_checks(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="too short"):
        load_file(path)
    with pytest.raises(ValueError, match="limit"):
        load_file(_raw_file(tmp_path / "huge.safetensors", b"{}", header_len=2**40))
    with pytest.raises(ValueError, match="truncated"):
        load_file(_raw_file(tmp_path / "cut.safetensors", b"{}", header_len=100))


def test_truncated_real_file(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file(_tensors(), path)
    raw = path.read_bytes()
    path.write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="truncated"):
        load_file(path)


def test_save_file_rejects_unstorable(tmp_path):
    with pytest.raises(ValueError, match="'x'.*complex"):
        save_file({"x": np.zeros(2, np.complex64)}, tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match="metadata"):
        save_file({"x": np.zeros(2, np.float32)}, tmp_path / "c.safetensors", metadata={"a": 1})
