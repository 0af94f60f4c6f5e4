"""`clip train --train-shards`: webdataset tar shards (written here with the webdataset library's own
TarWriter) as an endless stream resampled with the seed; a resumed run reads what an uninterrupted one
did and ends bit-identical to it; a resume over changed shards is refused."""

import io
import json
import os

import numpy as np
import pytest

from train_helpers import TINY_CONFIG

wds = pytest.importorskip("webdataset")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from clip.data import SyntheticShapes

    root = tmp_path_factory.mktemp("shards")
    images = SyntheticShapes(36, seed=0, image_size=32)
    for s in range(3):
        with wds.TarWriter(str(root / f"part-{s:03d}.tar")) as sink:
            for i in range(s * 12, s * 12 + 12 - s):  # 12, 11 and 10 samples: shards of different sizes
                image, caption = images[i]
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                sink.write({"__key__": f"sample{i:04d}", "png": buffer.getvalue(), "txt": caption})
    return root


def test_the_stream_is_a_pure_function_of_seed_and_position_and_resamples_shards(shards):
    from clip.train.shards import ShardStream, StreamOrder, expand_shards

    paths = expand_shards(str(shards / "part-{000..002}.tar"))
    assert paths == expand_shards(str(shards)) == sorted(str(p) for p in shards.glob("*.tar"))
    a, b = ShardStream(paths, seed=7), ShardStream(paths, seed=7)
    assert len(a) == 33
    positions = [a.locate(n) for n in range(200)]
    assert positions == [b.locate(n) for n in reversed(range(200))][::-1]  # the order of the questions is irrelevant
    assert {shard for shard, _ in positions} == {0, 1, 2}
    draws = a._draws[: len(a._ends)]
    assert draws != sorted(draws)  # resampled, not a fixed sweep
    start = 0
    for d, shard in enumerate(draws[:6]):  # each draw reads its whole shard once, in a seeded order
        size = len(a.samples[shard])
        assert sorted(i for _, i in positions[start : start + size]) == list(range(size))
        start += size
    assert [ShardStream(paths, seed=8).locate(n) for n in range(50)] != positions[:50]
    image, caption = a[150]
    assert image.size == (32, 32) and caption
    assert StreamOrder(33, 8, world=2, rank=1).local_indices(3) == [28, 29, 30, 31]


def _train(tmp_path, out, shards, *extra, expect=0, stop_after=None):
    from train_backends_helpers import run_cli

    (tmp_path / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    run_cli(
        [
            "train",
            "--config",
            str(tmp_path / "tiny.json"),
            "--train-shards",
            str(shards),
            "--batch-size",
            "8",
            "--steps",
            "6",
            "--warmup-steps",
            "1",
            "--save-every",
            "3",
            "--out",
            str(out),
            "--quiet",
            *extra,
        ],
        stop_after=stop_after,
        expect=expect,
    )
    return True


def test_a_resumed_stream_run_equals_an_uninterrupted_one_and_changed_shards_are_refused(tmp_path, shards, capsys):
    from clip.common.io import read_safetensors

    assert _train(tmp_path, tmp_path / "full", shards)
    assert _train(tmp_path, tmp_path / "split", shards, stop_after=3)
    assert _train(tmp_path, tmp_path / "split", shards, "--resume", "--workers", "1")
    last = os.path.join("checkpoints", "step-00000006", "model.safetensors")
    full, split = (read_safetensors(tmp_path / d / last) for d in ("full", "split"))
    assert all(np.array_equal(full[n], split[n]) for n in full)  # 6 steps x 8 = 48 samples: past one pass of 33

    changed = tmp_path / "changed"
    changed.mkdir()
    for path in sorted(shards.glob("*.tar"))[:2]:
        (changed / path.name).write_bytes(path.read_bytes())
    assert _train(tmp_path, tmp_path / "split", changed, "--resume", expect=2)
    assert "shards:" in capsys.readouterr().err
