"""minigpt2.weights.tf_checkpoint: TF1 checkpoints read without TensorFlow.

The fixtures (tests/fixtures/openai_tiny*, made by make_tf_checkpoint_fixtures.py) were written
by TensorFlow's own Saver; expected.npz is what TensorFlow's reader gives back. Expected numbers
come from there or from transformers, never from our own reader.
"""

import json
import shutil

import numpy as np
import pytest

from conftest import FIXTURES_DIR, GPT2_VOCAB_DIR
from minigpt2 import GPT2LMHeadModel, GPT2Tokenizer
from minigpt2.weights import tf_checkpoint as tfc

TINY = FIXTURES_DIR / "openai_tiny"
SHARDED = FIXTURES_DIR / "openai_tiny_sharded"
DATA = "model.ckpt.data-00000-of-00001"
IDS = np.array([[1, 5, 90, 3, 4, 60, 7, 8, 95, 0]])


def expected(folder=TINY):
    with np.load(folder / "expected.npz") as npz:
        return {name: npz[name] for name in npz.files}


@pytest.fixture
def release(tmp_path):
    """A copy of the one-shard fixture, to damage."""
    return shutil.copytree(TINY, tmp_path / "release")


# ---------------------------------------------------------------- crc32c and varints

def test_crc32c_known_values():
    assert tfc.crc32c(b"123456789") == 0xE3069283 == tfc.crc32c_bytewise(b"123456789")
    assert tfc.crc32c(bytes(32)) == 0x8A9136AA              # RFC 3720 B.4: 32 bytes of zeros
    assert tfc.crc32c(bytes(range(32))) == 0x46DD794E       # RFC 3720 B.4: 0x00..0x1f


@pytest.mark.parametrize("n", [0, 1, 4095, 4096, 4097, 70_001, 300_007])
def test_crc32c_fast_path_equals_the_bytewise_loop(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    assert tfc.crc32c(data) == tfc.crc32c_bytewise(data)
    assert tfc.crc32c(data[n // 3:], tfc.crc32c(data[:n // 3])) == tfc.crc32c(data)   # continues


def test_mask_round_trip():
    for crc in (0, 1, 0xE3069283, 0xFFFFFFFF):
        assert tfc.unmask_crc(tfc.mask_crc(crc)) == crc
    assert tfc.mask_crc(0) == 0xA282EAD8


def test_varint():
    assert tfc.read_varint(b"\xac\x02", 0) == (300, 2)      # the protobuf documentation's example
    with pytest.raises(ValueError, match="past the end"):
        tfc.read_varint(b"\xac", 0)


# ---------------------------------------------------------------- every tensor as TF wrote it

@pytest.mark.parametrize("folder", [TINY, SHARDED], ids=["one_shard", "two_shards"])
def test_every_tensor_equals_what_tensorflow_wrote(folder):
    reference = expected(folder)
    checkpoint = tfc.TFCheckpoint(folder / "model.ckpt")
    assert sorted(checkpoint.keys()) == sorted(reference)
    for name, value in reference.items():
        ours = checkpoint.get(name)
        assert ours.dtype == value.dtype and ours.shape == value.shape, name
        assert np.array_equal(ours, value), name


def test_sharded_fixture_uses_both_shards():
    checkpoint = tfc.TFCheckpoint(SHARDED / "model.ckpt")
    assert checkpoint.num_shards == 2
    assert {checkpoint.entry(name).shard_id for name in checkpoint.keys()} == {0, 1}


def test_openai_names_map_to_hugging_face_names():
    assert tfc.hf_name("model/wte") == "wte.weight"
    assert tfc.hf_name("model/h11/attn/c_attn/w") == "h.11.attn.c_attn.weight"
    assert tfc.hf_name("model/h0/ln_2/g") == "h.0.ln_2.weight"
    assert tfc.hf_name("model/h0/mlp/c_proj/b") == "h.0.mlp.c_proj.bias"
    assert tfc.hf_name("model/ln_f/b") == "ln_f.bias"
    for bad in ("model/h0/ln_1/w", "model/h0/attn/c_attn/g", "model/h0/ln_f/g", "model/ln_1/g", "global_step"):
        assert tfc.hf_name(bad) is None, bad


def test_load_openai_release_config_and_weights():
    config, weights = tfc.load_openai_release(TINY)
    hparams = json.loads((TINY / "hparams.json").read_text())
    assert (config.vocab_size, config.n_positions, config.n_embd, config.n_head, config.n_layer) == \
        tuple(hparams[k] for k in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"))
    reference = expected()
    assert len(weights) == len(reference)
    # the conv weights lose their leading 1: [1, c, 3c] -> [c, 3c], HF's Conv1D layout
    np.testing.assert_array_equal(weights["h.3.attn.c_attn.weight"], reference["model/h3/attn/c_attn/w"][0])
    np.testing.assert_array_equal(weights["h.0.ln_1.weight"], reference["model/h0/ln_1/g"])
    assert all(w.dtype == np.float32 for w in weights.values())


def test_is_openai_release(tmp_path, release):
    assert tfc.is_openai_release(TINY) and tfc.is_openai_release(SHARDED)
    (release / "config.json").write_text("{}")
    assert not tfc.is_openai_release(release)          # a converted folder is a Hugging Face folder
    assert not tfc.is_openai_release(tmp_path)


# ---------------------------------------------------------------- the model

def test_logits_equal_transformers_on_the_converted_folder(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import torch

    from minigpt2.cli import main

    assert main(["convert", str(TINY), str(tmp_path / "hf")]) == 0
    reference_model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        reference = reference_model(torch.tensor(IDS)).logits.numpy()
    for backend in ("numpy", "numba"):
        ours = GPT2LMHeadModel.from_pretrained(TINY, backend=backend)(IDS).logits
        np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)
    sharded = GPT2LMHeadModel.from_pretrained(SHARDED, backend="numpy")(IDS).logits
    np.testing.assert_allclose(sharded, reference, atol=1e-5, rtol=0)
    # and minigpt2 reads the converted folder back the same
    converted = GPT2LMHeadModel.from_pretrained(tmp_path / "hf", backend="numpy")(IDS).logits
    np.testing.assert_allclose(converted, reference, atol=1e-5, rtol=0)


def test_convert_refuses_an_existing_output(tmp_path, capsys):
    from minigpt2.cli import main

    assert main(["convert", str(TINY), str(tmp_path / "hf")]) == 0
    assert main(["convert", str(TINY), str(tmp_path / "hf")]) == 1
    assert "already exists" in capsys.readouterr().err


def test_convert_without_dtype_needs_a_release(tmp_path, capsys):
    from minigpt2.cli import main

    assert main(["convert", "tiny-shakespeare", str(tmp_path / "out")]) == 1
    assert "--dtype is required" in capsys.readouterr().err


def test_tokenizer_reads_the_release_files(tmp_path, release):
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copyfile(GPT2_VOCAB_DIR / name, release / name)
    tok = GPT2Tokenizer.from_pretrained(release)
    assert tok.encode("Hello world") == [15496, 995]        # transformers' docstring example
    assert GPT2LMHeadModel.from_pretrained(release, backend="numpy").config.vocab_size == 96


def test_hparams_that_do_not_fit_the_weights(release):
    hparams = json.loads((release / "hparams.json").read_text())
    (release / "hparams.json").write_text(json.dumps({**hparams, "n_layer": 15}))
    with pytest.raises(ValueError, match=r"model\.ckpt\.index with hparams.json \(n_layer=15.*'model/h15/"):
        GPT2LMHeadModel.from_pretrained(release, backend="numpy")
    (release / "hparams.json").write_text(json.dumps({**hparams, "n_layer": 17}))
    with pytest.raises(ValueError, match=r"model\.ckpt\.index .*missing variable 'model/h16/"):
        GPT2LMHeadModel.from_pretrained(release, backend="numpy")
    (release / "hparams.json").write_text(json.dumps({**hparams, "n_embd": 16}))
    with pytest.raises(ValueError, match=r"model\.ckpt\.index .*n_embd=16\): variable "
                                         r"'model/h0/attn/c_attn/b' has shape \[24\], expected \[48\]"):
        GPT2LMHeadModel.from_pretrained(release, backend="numpy")


# ---------------------------------------------------------------- damaged files: one clear error each

def reseal(index):
    """Recompute every block's crc32c trailer of an index, so a change inside a block is read."""
    data = bytearray(index)
    _, (offset, size) = tfc.read_footer(bytes(data), "index")
    handles = [(offset, size)]
    for _, handle in tfc.block_entries(bytes(data[offset:offset + size]), "index"):
        block_offset, pos = tfc.read_varint(handle, 0)
        handles.append((block_offset, tfc.read_varint(handle, pos)[0]))
    for offset, size in handles:
        crc = tfc.mask_crc(tfc.crc32c(bytes(data[offset:offset + size + 1])))
        data[offset + size + 1:offset + size + 5] = crc.to_bytes(4, "little")
    return bytes(data)


def patch_entry(release, name, change):
    """Apply change(value bytes) -> same-length bytes to the index entry of tensor `name`, resealed."""
    path = release / "model.ckpt.index"
    index = path.read_bytes()
    value = tfc.read_table(path)[name.encode()]
    at = index.find(value)
    assert at > 0 and index.count(value) == 1
    new = change(bytearray(value))
    assert len(new) == len(value)
    path.write_bytes(reseal(index[:at] + bytes(new) + index[at + len(value):]))


def test_flipped_byte_in_the_data(release):
    entry = tfc.TFCheckpoint(release / "model.ckpt").entry("model/h3/mlp/c_fc/w")
    data = bytearray((release / DATA).read_bytes())
    data[entry.offset + 17] ^= 0x01
    (release / DATA).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{DATA}: tensor 'model/h3/mlp/c_fc/w': crc32c mismatch"):
        GPT2LMHeadModel.from_pretrained(release, backend="numpy")


def test_truncated_index(release):
    path = release / "model.ckpt.index"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"model\.ckpt\.index: not a TensorFlow checkpoint index"):
        GPT2LMHeadModel.from_pretrained(release, backend="numpy")


def test_truncated_data_shard(release):
    last = max(tfc.TFCheckpoint(release / "model.ckpt").entries.values(), key=lambda e: e.offset)
    (release / DATA).write_bytes((release / DATA).read_bytes()[:-4])
    with pytest.raises(ValueError, match=rf"{DATA}: tensor '{last.name}': bytes .* run past the end"):
        tfc.load_openai_release(release)


def test_wrong_crc_in_the_index(release):
    def change_crc(value):
        assert value[-5] == 0x35                    # field 6 (crc32c), fixed32: the last 5 bytes
        value[-1] ^= 0x40
        return value
    patch_entry(release, "model/wpe", change_crc)
    with pytest.raises(ValueError, match=rf"{DATA}: tensor 'model/wpe': crc32c mismatch"):
        tfc.load_openai_release(release)


def test_damaged_index_block(release):
    path = release / "model.ckpt.index"
    index = bytearray(path.read_bytes())
    index[40] ^= 0x01                               # inside the first data block, not resealed
    path.write_bytes(bytes(index))
    with pytest.raises(ValueError, match=r"model\.ckpt\.index: block at 0 fails its crc32c check"):
        tfc.load_openai_release(release)


def test_lying_shape(release):
    def shrink(value):
        shape = bytes([0x12, 0x02, 0x08, 96, 0x12, 0x02, 0x08, 8])     # dims [96, 8]
        at = bytes(value).find(shape)
        value[at + 3] = 95                                            # claim [95, 8]
        return value
    patch_entry(release, "model/wte", shrink)
    with pytest.raises(ValueError, match=rf"{DATA}: tensor 'model/wte': shape \[95, 8\] .* needs 3040 bytes, "
                                         "the index says 3072"):
        tfc.load_openai_release(release)


def test_unknown_dtype(release):
    def to_string(value):
        assert value[:2] == b"\x08\x01"             # dtype = DT_FLOAT
        value[1] = 7                                # DT_STRING
        return value
    patch_entry(release, "model/ln_f/g", to_string)
    with pytest.raises(ValueError, match=r"model\.ckpt\.index: tensor 'model/ln_f/g' has TensorFlow dtype 7"):
        tfc.load_openai_release(release)


def test_compressed_block(release):
    path = release / "model.ckpt.index"
    index = bytearray(path.read_bytes())
    _, (offset, size) = tfc.read_footer(bytes(index), "index")
    block_offset, pos = tfc.read_varint(tfc.block_entries(bytes(index[offset:offset + size]), "i")[0][1], 0)
    block_size = tfc.read_varint(tfc.block_entries(bytes(index[offset:offset + size]), "i")[0][1], pos)[0]
    index[block_offset + block_size] = 1            # snappy
    path.write_bytes(reseal(bytes(index)))
    with pytest.raises(ValueError, match=r"model\.ckpt\.index: block at 0 is compressed"):
        tfc.load_openai_release(release)


def test_missing_shard(release):
    (release / DATA).unlink()
    with pytest.raises(ValueError, match=rf"data shard .*{DATA} is missing"):
        tfc.load_openai_release(release)


# ---------------------------------------------------------------- a table written here, to shape at will

def encode_varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def sealed_block(entries, restart_interval):
    """A LevelDB block of sorted (key, value) pairs, prefix-compressed, with its trailer."""
    block, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(block))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        block += encode_varint(shared) + encode_varint(len(key) - shared) + encode_varint(len(value))
        block += key[shared:] + value
        previous = key
    block += b"".join(r.to_bytes(4, "little") for r in restarts) + len(restarts).to_bytes(4, "little")
    return bytes(block), tfc.mask_crc(tfc.crc32c(bytes(block) + b"\0")).to_bytes(4, "little")


def write_table(path, table, n_blocks, restart_interval=16):
    """An SSTable of `table` {key: value} in `n_blocks` data blocks, as TF's table builder lays it out."""
    keys = sorted(table)
    out, index = bytearray(), []
    for chunk in np.array_split(np.arange(len(keys)), n_blocks):
        block, crc = sealed_block([(keys[i], table[keys[i]]) for i in chunk], restart_interval)
        index.append((keys[chunk[-1]], encode_varint(len(out)) + encode_varint(len(block))))
        out += block + b"\0" + crc
    handles = []
    for entries in ([], index):                        # the metaindex block (empty), then the index block
        block, crc = sealed_block(entries, 1)
        handles.append(encode_varint(len(out)) + encode_varint(len(block)))
        out += block + b"\0" + crc
    footer = b"".join(handles)
    out += footer + bytes(40 - len(footer)) + tfc.TABLE_MAGIC.to_bytes(8, "little")
    path.write_bytes(bytes(out))


def test_an_index_of_several_blocks_and_restart_points(release):
    table = tfc.read_table(TINY / "model.ckpt.index")
    write_table(release / "model.ckpt.index", table, n_blocks=3, restart_interval=5)
    assert len(tfc.block_entries(tfc.read_block((release / "model.ckpt.index").read_bytes(),
                                                tfc.read_footer((release / "model.ckpt.index").read_bytes(),
                                                                "index")[1], "index"), "index")) == 3
    checkpoint = tfc.TFCheckpoint(release / "model.ckpt")
    for name, value in expected().items():
        np.testing.assert_array_equal(checkpoint.get(name), value)


def test_a_sliced_tensor_is_refused(release):
    table = tfc.read_table(TINY / "model.ckpt.index")
    slice_field = bytes([7 << 3 | 2, 0])                # field 7 (slices), an empty TensorSliceProto
    table[b"model/wpe"] += slice_field
    write_table(release / "model.ckpt.index", table, n_blocks=1)
    with pytest.raises(ValueError, match=r"model\.ckpt\.index: tensor 'model/wpe' is stored in slices"):
        tfc.load_openai_release(release)


def test_an_offset_past_the_end_of_the_shard(release):
    table = tfc.read_table(TINY / "model.ckpt.index")
    fields = tfc.parse_proto(table[b"model/ln_f/b"], "entry")
    size = len((TINY / DATA).read_bytes())
    rebuilt = b""
    for number, value in fields:                        # re-encode with offset = the shard's size
        if number == 4:
            value = size
        if isinstance(value, bytes):
            rebuilt += encode_varint(number << 3 | 2) + encode_varint(len(value)) + value
        elif number == 6:
            rebuilt += encode_varint(number << 3 | 5) + value.to_bytes(4, "little")
        else:
            rebuilt += encode_varint(number << 3) + encode_varint(value)
    table[b"model/ln_f/b"] = rebuilt
    write_table(release / "model.ckpt.index", table, n_blocks=1)
    with pytest.raises(ValueError, match=rf"{DATA}: tensor 'model/ln_f/b': bytes {size}\.\.{size + 32} run past"):
        tfc.load_openai_release(release)
