"""webdataset shards (img2dataset's layout: key.jpg + key.txt caption + key.json metadata) as items.

Shards are read with the `webdataset` library's tar iterator; a local path is opened directly, a
`pipe:` command through webdataset, any other URL (s3://, https://, gs://) through fsspec.
"""

from __future__ import annotations

import os
import tarfile

from clip.tasks.backends import TaskError
from clip.tasks.embed.inputs import TAR_IMAGE_FIELDS, Collection, Item, parse_meta


def expand_shards(spec: str) -> list[str]:
    """`a.tar`, `shards-{00000..00009}.tar` or `a.tar::b.tar` -> the shard paths or URLs."""
    try:
        from webdataset.shardlists import expand_urls
    except ImportError:
        raise TaskError(
            f"{spec}: reading webdataset shards needs the webdataset package: pip install 'clip[data]'"
        ) from None
    return list(expand_urls(spec))


def _is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


def check_local_shard(path: str) -> None:
    """A local shard must exist and be a tar with at least one member: the user named it."""
    if not os.path.exists(path):
        raise TaskError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise TaskError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise TaskError(f"{path}: the tar file is empty (0 bytes)")
    try:
        with tarfile.open(path, "r:*") as tar:
            if tar.next() is None:
                raise TaskError(f"{path}: the tar file is empty (no samples)")
    except (tarfile.TarError, EOFError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TaskError(f"{path}: not a readable tar file ({reason})") from None


def shard_collection(spec: str) -> Collection:
    urls = expand_shards(spec)
    if not urls:
        raise TaskError(f"{spec}: the pattern names no shards")
    for url in urls:
        if _is_local(url):
            check_local_shard(url)

    def items():
        seen = set()
        for url in urls:
            yield from _shard_items(url, seen)

    return Collection("image", "webdataset", spec, items, None, has_captions=True)


def _open(url: str):
    if _is_local(url):
        return open(url, "rb")
    if url.startswith("pipe:"):
        from webdataset.gopen import gopen

        return gopen(url, "rb")
    import fsspec

    return fsspec.open(url, "rb").open()


def _shard_items(url: str, seen: set):
    """The items of one shard; a shard that cannot be read is an error naming it."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    def reraise(err):
        raise err

    name = os.path.basename(url.rstrip("/")) or url
    try:
        stream = _open(url)
    except (OSError, ValueError, ImportError) as err:
        raise TaskError(f"{url}: cannot open the shard ({err})") from None
    count = 0
    try:
        with stream:
            members = tar_file_expander([{"url": url, "stream": stream}], handler=reraise)
            for sample in group_by_keys(members, handler=reraise):
                count += 1
                yield _item(sample, name, seen)
    except (tarfile.TarError, EOFError, OSError, ValueError) as err:
        message = str(err.args[0]) if err.args else type(err).__name__
        raise TaskError(f"{url}: not a readable webdataset tar ({message})") from None
    if count == 0:
        raise TaskError(f"{url}: the shard holds no samples")


def _item(sample: dict, shard_name: str, seen: set) -> Item:
    key = sample["__key__"]
    field = next((f for f in TAR_IMAGE_FIELDS if f in sample), None)
    source = f"{shard_name}/{key}.{field or '*'}"
    caption = sample.get("txt")
    caption = caption.decode("utf-8", errors="replace").strip() if isinstance(caption, bytes) else None
    meta = parse_meta(sample["json"], f"{shard_name}/{key}.json") if "json" in sample else {}
    if key in seen:
        return Item(
            f"{key}@{shard_name}",
            source,
            caption=caption,
            meta=meta,
            error=f"duplicate key {key!r}: an earlier sample has it",
        )
    seen.add(key)
    if field is None:
        fields = ", ".join(sorted(f for f in sample if not f.startswith("__"))) or "none"
        return Item(key, source, caption=caption, meta=meta, error=f"no image in the sample (members: {fields})")
    return Item(key, source, data=sample[field], caption=caption, meta=meta)
