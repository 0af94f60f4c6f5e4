"""Reading embedding directories, trusting nothing in them: `clip embed`'s manifest layout and
clip-retrieval's layout (img_emb/img_emb_{i}.npy, text_emb/text_emb_{i}.npy, metadata/metadata_{i}.parquet).

Every problem is one TaskError naming the file and what is wrong with it: a manifest of the wrong
shape, an unknown format_version or kind, a chunk listed twice, a name that leaves the directory,
a missing or truncated chunk, a pickled .npy (never unpickled), vectors that are not finite or not
unit length, a keys file that does not match its chunk.
"""

from __future__ import annotations

import os
import re

import numpy as np

from clip.common.io import read_json_object, read_safetensors
from clip.index.store import inside, load_npy
from clip.tasks.backends import TaskError
from clip.tasks.embed import FORMAT_VERSION, MANIFEST, Embeddings

READABLE_VERSIONS = (1, FORMAT_VERSION)  # format 1: directories of clip embed before chunk_ranges

KINDS = ("image", "text")
NORM_TOLERANCE = 2e-3  # float32 unit vectors are within 1e-6; float16 storage within 1e-3
CLIP_RETRIEVAL_DIRS = {"image": ("img_emb", "img_emb"), "text": ("text_emb", "text_emb")}


def load_embeddings(path: str | os.PathLike | list | tuple, kind: str | None = None) -> Embeddings:
    """The vectors and sources of an embedding directory, or of several (a list: the shards of one
    input), in the order given. kind ("image"/"text") picks the modality of a clip-retrieval layout
    holding both (default: image)."""
    if isinstance(path, (list, tuple)):
        return _load_several([os.fspath(p) for p in path], kind)
    path = os.fspath(path)
    if os.path.basename(path) == MANIFEST:
        path = os.path.dirname(path) or "."
    if os.path.isfile(os.path.join(path, MANIFEST)):
        return _load_manifest_dir(path)
    if any(os.path.isdir(os.path.join(path, d)) for d, _ in CLIP_RETRIEVAL_DIRS.values()):
        return load_clip_retrieval_dir(path, kind)
    raise TaskError(
        f"{path}: not an embedding directory (no {MANIFEST}, no img_emb/ or text_emb/); make one with `clip embed`"
    )


def _field(manifest_path, manifest, key, ok, expected):
    value = manifest.get(key)
    if not ok(value):
        raise TaskError(f"{manifest_path}: {key!r} must be {expected}, found {value!r}")
    return value


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _read_manifest(path) -> dict:
    """The manifest, validated field by field, with "chunks" listed: format 1 lists them (and every
    skipped input); format 2 derives them from chunk_ranges, each chunk's keys file (chunks/N.json)
    naming its vectors and the inputs it skipped."""
    manifest_path = os.path.join(path, MANIFEST)
    try:
        manifest = read_json_object(manifest_path)
    except (ValueError, OSError) as err:
        raise TaskError(str(err)) from None
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise TaskError(
            f"{manifest_path}: unknown format_version {version!r} (this version reads "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    _field(manifest_path, manifest, "kind", lambda v: v in KINDS, "one of " + ", ".join(KINDS))
    _field(manifest_path, manifest, "dim", lambda v: _count(v) and v > 0, "a positive integer")
    _field(manifest_path, manifest, "count", _count, "a count")
    _field(manifest_path, manifest, "skipped", lambda v: v is None or isinstance(v, list), "a list")
    _field(manifest_path, manifest, "weights", lambda v: v is None or isinstance(v, str), "a fingerprint string")
    if manifest["kind"] == "image":
        _field(manifest_path, manifest, "root", lambda v: isinstance(v, str) and v, "the images' folder")
    if version == 1:
        _field(manifest_path, manifest, "chunks", lambda v: isinstance(v, list), "a list of chunks")
    else:
        manifest = {**manifest, "chunks": _chunks_of_ranges(path, manifest_path, manifest)}
    seen, total = set(), 0
    for number, chunk in enumerate(manifest["chunks"]):
        if not (
            isinstance(chunk, dict)
            and isinstance(chunk.get("file"), str)
            and isinstance(chunk.get("keys"), str)
            and _count(chunk.get("count"))
        ):
            raise TaskError(
                f"{manifest_path}: chunk {number} must be an object with file, keys and count, found {chunk!r}"
            )
        for name in (chunk["file"], chunk["keys"]):
            if name in seen:
                raise TaskError(
                    f"{manifest_path}: {name!r} is listed twice (chunk {number}); its vectors would count twice"
                )
            seen.add(name)
        total += chunk["count"]
    if total != manifest["count"]:
        raise TaskError(f"{manifest_path}: count is {manifest['count']} but its chunks hold {total}")
    return manifest


def _chunks_of_ranges(path, manifest_path, manifest) -> list[dict]:
    from clip.tasks.embed.layout import chunk_entry, chunk_numbers

    _field(manifest_path, manifest, "storage", lambda v: v in ("safetensors", "npy"), "safetensors or npy")
    try:
        numbers = chunk_numbers(manifest)
    except ValueError as err:
        raise TaskError(f"{manifest_path}: {err}") from None
    chunks = []
    for number in numbers:
        keys_file = inside(path, f"chunks/{number:06d}.json", "keys")
        try:
            side = read_json_object(keys_file)
        except (ValueError, OSError) as err:
            raise TaskError(f"{err}; re-run `clip embed` to repair") from None
        keys = side.get("texts" if manifest["kind"] == "text" else "keys")
        if not isinstance(keys, list):
            raise TaskError(f"{keys_file}: no list of keys")
        chunks.append({**chunk_entry(manifest, number, len(keys)), "side": side})
    return chunks


def check_vectors(array: np.ndarray, file: str | os.PathLike, rows: int | None, dim: int | None) -> np.ndarray:
    """`array` as float32, refused unless it is rows x dim, finite, and of unit rows."""
    if array.ndim != 2 or (rows is not None and array.shape[0] != rows) or (dim is not None and array.shape[1] != dim):
        raise TaskError(
            f"{file}: expected {rows if rows is not None else 'N'} x {dim if dim is not None else 'D'} "
            f"vectors, found shape {array.shape}"
        )
    if array.dtype.kind != "f":
        raise TaskError(f"{file}: expected floating-point vectors, found {array.dtype}")
    array = np.asarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise TaskError(f"{file}: row {bad} is not finite (NaN or infinity); re-embed this directory")
    norms = np.linalg.norm(array, axis=1)
    off = np.flatnonzero(np.abs(norms - 1) > NORM_TOLERANCE)
    if len(off):
        raise TaskError(
            f"{file}: row {int(off[0])} has length {norms[off[0]]:.4f}, not 1: the vectors are not "
            "normalized (scores would not be cosines)"
        )
    return array


def _read_chunk(path, chunk, dim) -> np.ndarray:
    file = inside(path, chunk["file"], "chunk")
    if not os.path.isfile(file):
        raise TaskError(f"{file}: missing (listed in {os.path.join(path, MANIFEST)}); re-run `clip embed` to repair")
    if file.endswith(".safetensors"):
        try:
            tensors = read_safetensors(file)
        except (ValueError, KeyError, TypeError, OSError) as err:
            raise TaskError(f"{file}: not a readable safetensors file ({err})") from None
        if "embeddings" not in tensors:
            raise TaskError(f"{file}: holds no 'embeddings' tensor (found {sorted(tensors)[:5]})")
        array = tensors["embeddings"]
    elif file.endswith(".npy"):
        array = load_npy(file, mmap=True)
    else:
        raise TaskError(f"{file}: unknown chunk format (expected .safetensors or .npy)")
    return check_vectors(array, file, chunk["count"], dim)


def _read_keys(path, chunk, kind) -> tuple[list[str], dict]:
    """(the chunk's keys, its whole keys file)."""
    file = inside(path, chunk["keys"], "keys")
    side = chunk.get("side")
    if side is None:
        try:
            side = read_json_object(file)
        except (ValueError, OSError) as err:
            raise TaskError(str(err)) from None
    field = "texts" if kind == "text" else "keys"
    values = side.get(field)
    if not isinstance(values, list) or len(values) != chunk["count"] or not all(isinstance(v, str) for v in values):
        found = f"{len(values)} entries" if isinstance(values, list) else repr(type(values).__name__)
        raise TaskError(f"{file}: {field!r} must list {chunk['count']} strings (one per vector), found {found}")
    if kind == "image":
        for key in values:  # lexical: every image stays under the manifest's root
            parts = key.split("/")
            if not key or key.startswith("/") or "\\" in key or "\x00" in key or ".." in parts or os.path.isabs(key):
                raise TaskError(f"{file}: key {key!r} is not a path inside the images' folder")
    return values, side


def _load_manifest_dir(path) -> Embeddings:
    manifest = _read_manifest(path)
    vectors = np.zeros((manifest["count"], manifest["dim"]), np.float32)
    sources, start = [], 0
    skipped = list(manifest.get("skipped") or [])  # format 1; format 2 keeps them with their chunk
    for chunk in manifest["chunks"]:
        array = _read_chunk(path, chunk, manifest["dim"])
        keys, side = _read_keys(path, chunk, manifest["kind"])
        vectors[start : start + len(array)] = array
        start += len(array)
        chunk_skipped = side.get("skipped") or []
        if not isinstance(chunk_skipped, list):
            raise TaskError(
                f"{inside(path, chunk['keys'], 'keys')}: 'skipped' must be a list, found {type(chunk_skipped).__name__}"
            )
        skipped += chunk_skipped
        named = side.get("sources")  # webdataset members and table rows: where the image came from
        if manifest["kind"] == "text":
            sources.extend(keys)
        elif isinstance(named, list) and len(named) == len(keys) and all(isinstance(n, str) for n in named):
            sources.extend(named)
        else:
            sources.extend(os.path.join(manifest["root"], *key.split("/")) for key in keys)
    manifest = {k: v for k, v in manifest.items() if k != "chunks" or manifest.get("format_version") == 1}
    return Embeddings(vectors, sources, skipped, manifest["kind"], manifest)


# --------------------------------------------------------------------- clip-retrieval's layout


def _numbered(folder, prefix, suffix) -> dict[int, str]:
    pattern = re.compile(rf"{re.escape(prefix)}_(\d+){re.escape(suffix)}")
    found = {}
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        match = pattern.fullmatch(name)
        if match:
            found[int(match.group(1))] = inside(folder, name, "part")
    return found


def load_clip_retrieval_dir(path: str | os.PathLike, kind: str | None = None) -> Embeddings:
    """img_emb/img_emb_{i}.npy (or text_emb/...) with metadata/metadata_{i}.parquet, as clip-retrieval's
    `clip inference` writes them: sources are the image paths (or urls, or captions for text)."""
    if kind is None:
        kind = "image" if os.path.isdir(os.path.join(path, "img_emb")) else "text"
    if kind not in CLIP_RETRIEVAL_DIRS:
        raise TaskError(f"unknown embedding kind {kind!r}; choose image or text")
    folder, prefix = CLIP_RETRIEVAL_DIRS[kind]
    parts = _numbered(os.path.join(path, folder), prefix, ".npy")
    if not parts:
        raise TaskError(f"{os.path.join(path, folder)}: no {prefix}_N.npy files")
    metadata = _numbered(os.path.join(path, "metadata"), "metadata", ".parquet")
    arrays, sources, columns, dim = [], [], {"captions": [], "urls": []}, None  # type: list, list, dict[str, list], int | None
    for number in sorted(parts):
        array = load_npy(parts[number], mmap=True)
        array = check_vectors(array, parts[number], None, dim)
        dim = array.shape[1]
        table = _read_metadata(metadata.get(number), parts[number], len(array))
        if kind == "text" and table.get("caption") is None:
            raise TaskError(f"{metadata.get(number)}: text embeddings need a 'caption' column")
        names = table.get("image_path") or table.get("url") or [f"{prefix}_{number}:{row}" for row in range(len(array))]
        sources.extend(table["caption"] if kind == "text" else names)
        columns["captions"].extend(table.get("caption") or [""] * len(array))
        columns["urls"].extend(table.get("url") or [""] * len(array))
        arrays.append(array)
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "dim": dim,
        "count": sum(map(len, arrays)),
        "weights": None,
        "model": None,
        "layout": "clip-retrieval",
        "root": os.path.abspath(path),
    }
    embeddings = Embeddings(np.concatenate(arrays), sources, [], kind, manifest)
    # clip-retrieval's extra columns: only these embeddings have them
    embeddings.columns = {name: values for name, values in columns.items() if any(values)}
    return embeddings


def _read_metadata(file, vectors_file, rows) -> dict:
    """The string columns of one metadata part (image_path, caption, url), each `rows` long."""
    if file is None:
        raise TaskError(f"{vectors_file}: no matching metadata/metadata_N.parquet beside it")
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file, columns=None)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types; all mean "unreadable"
        raise TaskError(f"{file}: not a readable parquet file ({str(err).splitlines()[0]})") from None
    if table.num_rows != rows:
        raise TaskError(f"{file}: {table.num_rows} rows but {vectors_file} holds {rows} vectors")
    out = {}
    for name in ("image_path", "caption", "url"):
        if name in table.column_names:
            out[name] = ["" if v is None else str(v) for v in table.column(name).to_pylist()]
    return out


def _load_several(paths, kind=None) -> Embeddings:
    if not paths:
        raise TaskError("no embedding directories given")
    parts = [load_embeddings(p, kind) for p in paths]
    first = parts[0].manifest
    assert first is not None  # load_embeddings always reads or builds a manifest
    seen: dict = {}
    for path, part in zip(paths, parts):
        manifest = part.manifest
        assert manifest is not None
        for key in ("kind", "dim", "weights"):
            if manifest.get(key) != first.get(key):
                raise TaskError(
                    f"{path} holds {key}={manifest.get(key)!r} but {paths[0]} {first.get(key)!r}; "
                    "search directories of one model and kind together"
                )
        shard = manifest.get("shard", [0, 1])
        k, n = shard if isinstance(shard, list) and len(shard) == 2 else (0, 1)
        root = manifest.get("root")
        for other_k, other_n, other_path in seen.get(root, []):
            if other_n != n or other_k == k:  # the same part twice, or parts of two different splits
                raise TaskError(
                    f"{path} (shard {k}/{n}) and {other_path} (shard {other_k}/{other_n}) overlap: "
                    f"both hold inputs of {root}"
                )
        seen.setdefault(root, []).append((k, n, path))
    combined = Embeddings(
        np.concatenate([p.vectors for p in parts]),
        [s for p in parts for s in p.sources],
        [e for p in parts for e in p.skipped],
        parts[0].kind,
        first,
    )
    part_columns = [p.columns for p in parts]
    if all(part_columns):
        combined.columns = {
            name: [v for p, columns in zip(parts, part_columns) for v in (columns or {}).get(name, [""] * len(p))]
            for name in part_columns[0] or {}
        }
    return combined
