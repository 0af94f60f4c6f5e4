"""Damaged and hostile checkpoints, built with numpy only, shared by the backend and convert tests.

`tiny_checkpoint(dir)` writes a complete tiny CLIPModel checkpoint (config.json + model.safetensors);
each entry of SAFETENSORS_CASES damages its model.safetensors the way issue 19 found our reader
trusting it, and gives the error every loader must raise (a regex naming the file and the tensor).
"""

import json
import os
import struct

import numpy as np

from backend_configs import make_config
from clip.common import io, weights

LOGIT = "logit_scale"
LN_A = "text_model.final_layer_norm.weight"  # two tensors of one size: one can be pointed at the other's bytes
LN_B = "text_model.final_layer_norm.bias"


def tiny_checkpoint(directory, seed=0) -> dict:
    """config.json + model.safetensors of a tiny CLIPModel with random float32 weights; returns the arrays."""
    os.makedirs(directory, exist_ok=True)
    config = make_config("quick_gelu", "CLIPModel")
    config.save_pretrained(directory)
    rng = np.random.default_rng(seed)
    arrays = {
        name: rng.standard_normal(shape).astype(np.float32) * 0.02
        for name, (shape, _) in weights.expected_parameters(config, "CLIPModel").items()
    }
    arrays[LOGIT] = np.array(np.log(1 / 0.07), np.float32)
    io.write_safetensors(arrays, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    return arrays


def split(path):
    """(header dict, header text, data bytes) of a safetensors file, read without our reader."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    text = raw[8 : 8 + n].decode()
    return json.loads(text), text, raw[8 + n :]


def join(path, header_text: str, data: bytes):
    blob = header_text.encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + data)


def rewrite_header(path, change):
    """Apply `change(header)` (in place) and write the file back with the same data bytes."""
    header, _, data = split(path)
    change(header)
    join(path, json.dumps(header), data)


def _negative_offsets(header):
    begin, end = header[LOGIT]["data_offsets"]
    header[LOGIT]["data_offsets"] = [begin - 64, end - 64]  # would read bytes of the header


def _overlapping_offsets(header):
    first, second = sorted((LN_A, LN_B), key=lambda n: header[n]["data_offsets"][0])
    header[second]["data_offsets"] = list(header[first]["data_offsets"])  # both tensors share one's bytes


def _gap(header):
    # drop a tensor from the middle of the data: its bytes belong to no entry
    middle = sorted((n for n in header if n != "__metadata__"), key=lambda n: header[n]["data_offsets"][0])[3]
    del header[middle]


def _not_an_object(header):
    header[LN_A] = [1, 2, 3]


def _missing_shape(header):
    del header[LN_A]["shape"]


def _nested(path):
    _, text, data = split(path)
    join(path, text[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}", data)


def _astype(dtype):
    def damage(path):
        arrays = dict(io.read_safetensors(path, mmap=False))
        arrays[LN_A] = (arrays[LN_A] * 100).astype(dtype)
        io.write_safetensors(arrays, path)

    return damage


# name -> (damage(path of model.safetensors), regex the error must match)
SAFETENSORS_CASES = {
    "negative offsets": (
        lambda p: rewrite_header(p, _negative_offsets),
        rf"model\.safetensors: tensor '{LOGIT}'.*data_offsets.*non-negative",
    ),
    "overlapping offsets": (
        lambda p: rewrite_header(p, _overlapping_offsets),
        r"model\.safetensors: tensor 'text_model\.final_layer_norm\.\w+'.*overlap",
    ),
    "gap": (lambda p: rewrite_header(p, _gap), r"model\.safetensors: tensor '.*'.*gap"),
    "entry not an object": (
        lambda p: rewrite_header(p, _not_an_object),
        rf"model\.safetensors: tensor '{LN_A}'.*list, not an object",
    ),
    "missing shape": (
        lambda p: rewrite_header(p, _missing_shape),
        rf"model\.safetensors: tensor '{LN_A}'.*missing shape",
    ),
    "deeply nested": (_nested, r"model\.safetensors: .*nested deeper"),
    "bool weight": (
        _astype(bool),
        rf"model\.safetensors: tensor '{LN_A}' has dtype bool; model weights must be floating point",
    ),
    "int64 weight": (
        _astype(np.int64),
        rf"model\.safetensors: tensor '{LN_A}' has dtype int64; model weights must be floating point",
    ),
}


def damaged_checkpoint(directory, case) -> str:
    """A tiny checkpoint in `directory` damaged as SAFETENSORS_CASES[case]; returns the error regex."""
    tiny_checkpoint(directory)
    damage, message = SAFETENSORS_CASES[case]
    damage(os.path.join(directory, "model.safetensors"))
    return message


# Malformed files of the other weight formats: name -> bytes (or a builder taking the good file's bytes)
def garbage_bytes(seed=0, size=4096) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 605247624\n"
