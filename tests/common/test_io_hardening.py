"""Issue 19: the safetensors reader and the JSON readers against hostile files, case by case and by
property-based fuzzing (hypothesis, bounded to a few seconds per test).

The reference is the safetensors library itself: whatever our reader loads, the library loads
with the same names, dtypes, shapes and bytes; whatever it refuses is a ValueError naming the file.
"""

import json
import struct

import numpy as np
import pytest
import safetensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clip.common import io
from clip.common.config import CLIPConfig

torch = pytest.importorskip("torch")  # the library's "pt" view reads every dtype we read (bfloat16, uint16, ...)

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def _base_tensors():
    rng = np.random.default_rng(0)
    return {
        "a.weight": rng.standard_normal((3, 4)).astype(np.float32),
        "b.bias": rng.standard_normal(5).astype(np.float16),
        "c.scale": np.array(2.5, np.float64),
        "d.ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "e.mask": np.array([True, False, True]),
        "f.empty": np.zeros((0, 4), np.float32),
        "g.bytes": np.arange(7, dtype=np.uint8),
    }


def _file_bytes(tmp_path) -> bytes:
    path = tmp_path / "base.safetensors"
    io.write_safetensors(_base_tensors(), path, metadata={"format": "pt"})
    return path.read_bytes()


def _library_tensors(path) -> dict:
    with safetensors.safe_open(path, framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118  (safe_open is no dict)


def _same_bytes(ours: np.ndarray, theirs) -> bool:
    theirs_bytes = theirs.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return np.ascontiguousarray(ours).tobytes() == theirs_bytes and tuple(ours.shape) == tuple(theirs.shape)


TORCH_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "uint16": torch.uint16,
    "uint32": torch.uint32,
    "uint64": torch.uint64,
    "bool": torch.bool,
}


def _check_against_library(path):
    """Our reader loads `path` only if the library loads it, with the same tensors; else a ValueError."""
    try:
        ours = io.read_safetensors(path)
    except ValueError as err:
        assert str(path) in str(err)
        return None
    theirs = _library_tensors(path)  # must not raise: we accepted the file
    assert sorted(ours) == sorted(theirs)
    for name, array in ours.items():
        assert TORCH_DTYPES[array.dtype.name] == theirs[name].dtype, name
        assert _same_bytes(array, theirs[name]), name
    return ours


# ------------------------------------------------------------------ the cases of the issue, one by one


def test_the_base_file_reads_as_the_library_reads_it(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(_file_bytes(tmp_path))
    ours = _check_against_library(path)
    assert ours is not None and sorted(ours) == sorted(_base_tensors())


def _with_header(tmp_path, change) -> str:
    raw = _file_bytes(tmp_path)
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    change(header)
    blob = json.dumps(header).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n :])
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda h: h["a.weight"].update(data_offsets=[-8, 40]),
            r"tensor 'a\.weight': data_offsets \[-8, 40\] are not two non-negative integers",
        ),
        (
            lambda h: h["a.weight"].update(data_offsets=[0, 48]),
            r"tensor 'a\.weight': its bytes 0\.\.48 overlap the tensor before them",
        ),
        (lambda h: h.pop("b.bias"), r"tensor 'e\.mask': its bytes \d+\.\.\d+ leave a gap of 10 bytes before them"),
        (lambda h: h.update({"b.bias": "F16"}), r"tensor 'b\.bias': its header entry is a str, not an object"),
        (
            lambda h: h["b.bias"].pop("shape"),
            r"tensor 'b\.bias': its header entry must have exactly dtype, shape and data_offsets \(missing shape\)",
        ),
        (
            lambda h: h["b.bias"].update(shape=[5.0]),
            r"tensor 'b\.bias': shape \[5\.0\] is not a list of non-negative integers",
        ),
        (lambda h: h["b.bias"].update(shape=[True, 5]), r"tensor 'b\.bias': shape \[True, 5\]"),
        (lambda h: h["b.bias"].update(dtype="F8_E4M3"), r"tensor 'b\.bias' has unsupported dtype 'F8_E4M3'"),
        (lambda h: h.update({"__metadata__": {"format": 1}}), r"__metadata__ must map names to strings"),
    ],
)
def test_header_cases_refused_like_the_library(tmp_path, change, message):
    path = _with_header(tmp_path, change)
    with pytest.raises(ValueError, match=message):
        io.read_safetensors(path)
    with pytest.raises(safetensors.SafetensorError):
        _library_tensors(path)


def test_an_entry_with_an_unknown_key_is_refused(tmp_path):
    # (stricter than the library, which ignores unknown keys: the format has exactly three)
    path = _with_header(tmp_path, lambda h: h["b.bias"].update(extra=1))
    with pytest.raises(
        ValueError,
        match=r"tensor 'b\.bias': its header entry must have exactly dtype, shape and data_offsets \(unknown extra\)",
    ):
        io.read_safetensors(path)


def test_bytes_after_the_last_tensor_and_a_deep_header(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(_file_bytes(tmp_path) + b"\x00" * 8)
    with pytest.raises(ValueError, match=r"8 bytes after the last tensor belong to none"):
        io.read_safetensors(path)
    blob = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)
    with pytest.raises(
        ValueError, match=r"m\.safetensors: not a safetensors file \(header is not valid JSON: nested deeper than 64"
    ):
        io.read_safetensors(path)


def test_a_tensor_name_given_twice_is_refused(tmp_path):
    raw = _file_bytes(tmp_path)
    (n,) = struct.unpack("<Q", raw[:8])
    text = raw[8 : 8 + n].decode().rstrip()
    header = json.loads(text)
    twice = text[:-1] + ', "g.bytes": ' + json.dumps(header["g.bytes"]) + "}"  # the same entry again
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(twice)) + twice.encode() + raw[8 + n :])
    with pytest.raises(ValueError, match=r"the name 'g\.bytes' appears twice"):
        io.read_safetensors(path)


# ------------------------------------------------------------------ fuzzing


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
ENTRY_VALUES = (
    JSON_VALUES
    | st.sampled_from(["F32", "F16", "F64", "BF16", "I64", "U8", "BOOL", "U16", "I8"])
    | st.lists(st.integers(-4, 80), max_size=3)
)


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_headers(tmp_path, data):
    """One to three header fields replaced by arbitrary values (or removed, or added)."""
    raw = _file_bytes(tmp_path)
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    for _ in range(data.draw(st.integers(1, 3))):
        name = data.draw(st.sampled_from(sorted(header) + ["new.tensor"]))
        if name == "__metadata__" or name == "new.tensor" or not isinstance(header.get(name), dict):
            header[name] = data.draw(ENTRY_VALUES)
            continue
        field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra", "drop"]))
        if field == "drop":
            header.pop(name)
        else:
            header[name][field] = data.draw(ENTRY_VALUES)
    blob = json.dumps(header).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n :])
    _check_against_library(path)


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_bytes(tmp_path, data):
    """Bytes flipped anywhere (the length field, the header, the data), the file cut or extended."""
    raw = bytearray(_file_bytes(tmp_path))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.sampled_from([None, "cut", "extend"]))
    if cut == "cut":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif cut == "extend":
        raw += data.draw(st.binary(min_size=1, max_size=16))
    path = tmp_path / "m.safetensors"
    path.write_bytes(bytes(raw))
    _check_against_library(path)


CONFIG_KEYS = [
    ("projection_dim",),
    ("logit_scale_init_value",),
    ("id2label",),
    ("text_config",),
    ("vision_config",),
    *[
        ("text_config", k)
        for k in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "max_position_embeddings",
            "hidden_act",
            "layer_norm_eps",
            "attention_dropout",
            "eos_token_id",
            "pad_token_id",
            "projection_dim",
        )
    ],
    *[
        ("vision_config", k)
        for k in (
            "hidden_size",
            "image_size",
            "patch_size",
            "num_channels",
            "num_attention_heads",
            "hidden_act",
            "layer_norm_eps",
            "attention_dropout",
            "num_hidden_layers",
        )
    ],
]


def _small_config() -> dict:
    return CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    ).to_dict()


@FUZZ
@given(data=st.data())
def test_fuzz_config_values(tmp_path, data):
    """config.json with one to three values replaced: it loads (and validates again after a save), or
    it is a ValueError or TypeError with a message; never another exception."""
    config = _small_config()
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(CONFIG_KEYS))
        node = config
        for part in path[:-1]:
            node = node[part] if isinstance(node.get(part), dict) else node.setdefault(part + "_replaced", {})
        node[path[-1]] = data.draw(JSON_VALUES | st.integers(-3, 100))
    (tmp_path / "config.json").write_text(json.dumps(config))
    try:
        loaded = CLIPConfig.from_pretrained(tmp_path)
    except (ValueError, TypeError) as err:
        assert str(err)
        return
    assert CLIPConfig.from_dict(json.loads(loaded.to_json_string())) == loaded  # what loads, saves and loads again


@FUZZ
@given(data=st.data())
def test_fuzz_config_bytes(tmp_path, data):
    raw = bytearray(json.dumps(_small_config()).encode())
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    (tmp_path / "config.json").write_bytes(bytes(raw))
    try:
        CLIPConfig.from_pretrained(tmp_path)
    except (ValueError, TypeError) as err:
        assert str(err)


@pytest.mark.parametrize("labels", [0, ["cat", "dog"], {"first": "cat"}])
def test_id2label_that_is_not_a_map_of_indices_is_a_valueerror(tmp_path, labels):
    # a fuzz finding: `"id2label": 0` was an AttributeError
    (tmp_path / "config.json").write_text(json.dumps({**_small_config(), "id2label": labels}))
    with pytest.raises(ValueError, match=r"CLIPConfig\.id2label must map class indices to labels"):
        CLIPConfig.from_pretrained(tmp_path)


def test_a_deeply_nested_config_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text('{"text_config": ' + "[" * 50_000 + "]" * 50_000 + "}")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON: nested deeper than 64 levels"):
        CLIPConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("[]")
    with pytest.raises(ValueError, match=r"config\.json must hold a JSON object, found list"):
        CLIPConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "weight_map, message",
    [
        ({"a": "../../etc/passwd"}, r"shard '\.\./\.\./etc/passwd' is not a file name beside the index"),
        ({"a": "/dev/zero"}, r"shard '/dev/zero' is not a file name beside the index"),
        (
            {"a": "./x/../model.safetensors"},
            r"shard '\./x/\.\./model\.safetensors' is not a file name beside the index",
        ),
        ({"a": 1}, r"'weight_map' must map tensor names to shard file names"),
        ([], r"'weight_map' must map tensor names to shard file names"),
        ({}, r"the index lists no shards"),
    ],
)
def test_a_hostile_shard_index_opens_nothing_else(tmp_path, weight_map, message):
    from clip.common import hub

    (tmp_path / hub.SAFETENSORS_INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    with pytest.raises(ValueError, match=rf"model\.safetensors\.index\.json: {message}"):
        hub.resolve_weight_files(tmp_path, [hub.SAFETENSORS_INDEX_NAME])
