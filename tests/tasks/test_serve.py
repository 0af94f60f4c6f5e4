"""clip serve: the JSON API against a server on 127.0.0.1 (httpx), checked against exact numpy search;
clip-retrieval's /knn-service request as ClipClient sends it; limits and 4xx one-line errors."""

import base64
import json
import os

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serve_helpers import running


@pytest.fixture(scope="module")
def served(tmp_path_factory, shapes_dir, encoder):
    from clip.index.build import build_index
    from clip.serve.app import Searcher, create_app
    from clip.tasks.embed import embed_to_dir, load_embeddings
    from clip.tasks.search import EmbeddingIndex

    emb = tmp_path_factory.mktemp("serve") / "shapes.emb"
    embed_to_dir(encoder, shapes_dir, emb)
    build_index(emb, kind="hnsw", threads=1)
    index = EmbeddingIndex.load(emb)
    assert index.engine is not None
    app = create_app(Searcher(index, encoder, name="shapes", max_k=50), max_body=1 << 20)
    with running(app) as url:
        yield url, load_embeddings(emb), encoder


def _exact(embeddings, query, k):
    """The reference: a full sort of exact cosines."""
    scores = embeddings.vectors @ (query / np.linalg.norm(query))
    order = np.argsort(-scores, kind="stable")[:k]
    return [embeddings.sources[i] for i in order], scores[order]


def test_text_query_matches_exact_search(served):
    url, embeddings, encoder = served
    response = httpx.post(f"{url}/search", json={"text": "a red circle", "k": 4})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    sources, scores = _exact(embeddings, encoder.embed_texts(["a red circle"])[0], 4)
    assert [r["source"] for r in results] == sources and sources[0].endswith("red_circle.png")
    assert [r["score"] for r in results] == pytest.approx(scores.tolist(), abs=2e-3)
    assert results[0]["caption"] == "red_circle.png" and results[0]["image_url"].endswith(f"/image/{results[0]['id']}")


def test_image_queries_base64_upload_and_vector(served, shapes_dir):
    url, embeddings, _ = served
    data = (shapes_dir / "blue_circle.png").read_bytes()
    by_b64 = httpx.post(f"{url}/search", json={"image": base64.b64encode(data).decode(), "k": 2}).json()["results"]
    by_upload = httpx.post(f"{url}/search/image", files={"file": ("q.png", data, "image/png")}, data={"k": "2"}).json()[
        "results"
    ]
    assert by_b64[0]["source"].endswith("blue_circle.png") and by_b64[0]["score"] == pytest.approx(1.0, abs=2e-3)
    assert [r["id"] for r in by_upload] == [r["id"] for r in by_b64]
    vector = embeddings.vectors[2]
    by_vector = httpx.post(f"{url}/search", json={"vector": vector.tolist(), "k": 4}).json()["results"]
    assert [r["source"] for r in by_vector] == _exact(embeddings, vector, 4)[0]


def test_knn_service_as_clip_client_sends_it(served):
    """The body ClipClient builds, posted as it posts it: json.dumps(...) as data, no content type."""
    url, embeddings, encoder = served
    body = {
        "text": "a yellow circle",
        "image": None,
        "image_url": None,
        "embedding_input": None,
        "deduplicate": False,
        "use_safety_model": True,
        "use_violence_detector": True,
        "indice_name": "shapes",
        "use_mclip": False,
        "aesthetic_score": 9,
        "aesthetic_weight": 0.5,
        "modality": "image",
        "num_images": 3,
        "num_result_ids": 3,
    }
    response = httpx.post(f"{url}/knn-service", content=json.dumps(body))
    assert response.status_code == 200
    results = response.json()
    sources, scores = _exact(embeddings, encoder.embed_texts(["a yellow circle"])[0], 3)
    assert [r["image_path"] for r in results] == sources
    assert [r["similarity"] for r in results] == pytest.approx(scores.tolist(), abs=2e-3)
    assert set(results[0]) >= {"id", "similarity", "url", "caption"}
    assert httpx.get(f"{url}/indices-list").json() == ["shapes"]


def test_dedup_drops_near_copies(tmp_path, encoder, shapes_dir):
    """Two copies of each image: with dedup each appears once (checked by the ids' files)."""
    import shutil

    from clip.serve.app import Searcher, create_app
    from clip.tasks.embed import embed_to_dir
    from clip.tasks.search import EmbeddingIndex

    folder = tmp_path / "twice"
    shutil.copytree(shapes_dir, folder)
    for path in list(folder.iterdir()):
        shutil.copy(path, folder / f"copy_{path.name}")
    embed_to_dir(encoder, folder, tmp_path / "e.emb")
    searcher = Searcher(EmbeddingIndex.load(tmp_path / "e.emb"), encoder)
    query = encoder.embed_texts(["a red circle"])
    plain = [os.path.basename(r["source"]) for r in searcher.search(query, 4)]
    deduped = [os.path.basename(r["source"]) for r in searcher.search(query, 4, dedup=True)]
    assert sorted(plain[:2]) == ["copy_red_circle.png", "red_circle.png"]
    assert len({name.removeprefix("copy_") for name in deduped}) == len(deduped) == 4
    with running(create_app(searcher)) as url:  # the same through /knn-service's default deduplicate=true
        ids = [
            r["image_path"]
            for r in httpx.post(f"{url}/knn-service", json={"text": "a red circle", "num_images": 4}).json()
        ]
    assert len({os.path.basename(p).removeprefix("copy_") for p in ids}) == 4


def test_images_only_from_the_index(served, shapes_dir):
    url, embeddings, _ = served
    first = embeddings.sources.index(os.path.join(shapes_dir, "green_circle.png"))
    response = httpx.get(f"{url}/image/{first}")
    assert response.status_code == 200 and response.content == (shapes_dir / "green_circle.png").read_bytes()
    for bad in (
        "/image/99",
        "/image/-1",
        "/image/..%2F..%2Fetc%2Fpasswd",
        "/image/%2Fetc%2Fpasswd",
        "/../../etc/passwd",
    ):
        response = httpx.get(url + bad)
        assert 400 <= response.status_code < 500, bad
        assert "root:" not in response.text


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"text": "x", "k": 0}, 400, "k must be an integer from 1 to 50"),
        ({"text": "x", "k": 10**9}, 400, "k must be an integer from 1 to 50"),
        ({"text": "x", "k": "5"}, 400, "k must be an integer"),
        ({"k": 3}, 400, "exactly one of text"),
        ({"text": "x", "vector": [1.0]}, 400, "exactly one of text"),
        ({"text": ""}, 400, "text must be a non-empty string"),
        ({"image": "not base64!"}, 400, "image is not valid base64"),
        ({"image": base64.b64encode(b"GIF89a garbage").decode()}, 400, "image is not an image PIL can read"),
        ({"vector": [1.0, 2.0]}, 400, "the vector has 2 numbers but the index holds"),
        ({"vector": ["a"]}, 400, "a vector query must be a list of numbers"),
        ([1, 2], 400, "must be a JSON object"),
    ],
)
def test_bad_requests_get_one_line_4xx(served, body, status, message):
    url, _, _ = served
    response = httpx.post(f"{url}/search", json=body)
    assert response.status_code == status and message in response.json()["error"]
    assert "\n" not in response.text and "Traceback" not in response.text


def test_malformed_bodies_and_limits(served):
    url, _, _ = served
    for raw in (b"{not json", b"[" * 10_000, b"\xff\xfe", b""):
        response = httpx.post(f"{url}/knn-service", content=raw)
        assert response.status_code == 400 and "error" in response.json(), raw[:10]
    response = httpx.post(f"{url}/search", content=b"{" + b" " * (2 << 20) + b"}")
    assert response.status_code == 413 and "over" in response.json()["error"]
    for body, message in (
        ({"image_url": "http://example.com/a.jpg"}, "never fetches"),
        ({"text": "x", "modality": "text"}, "holds image embeddings"),
        ({"text": "x", "num_images": 51}, "k must be"),
    ):
        response = httpx.post(f"{url}/knn-service", json=body)
        assert response.status_code == 400 and message in response.json()["error"]
    upload = httpx.post(f"{url}/search/image", files={"file": ("x.png", b"not an image", "image/png")})
    assert upload.status_code == 400 and "upload 'x.png' is not an image" in upload.json()["error"]
    assert httpx.post(f"{url}/search/image", data={"k": "3"}).status_code == 400


def test_docs_and_page(served):
    url, _, _ = served
    assert httpx.get(f"{url}/docs").status_code == 200
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/knn-service", "/search", "/search/image"} <= set(spec["paths"])
    page = httpx.get(url + "/")
    assert page.status_code == 200 and 'id="query"' in page.text and "shapes" in page.text


def test_serve_binds_loopback_and_refuses_other_weights(tmp_path, shapes_dir, encoder):
    from clip.cli import build_parser
    from clip.index.build import build_index
    from clip.serve.cli import build_searcher
    from clip.tasks.backends import TaskError
    from clip.tasks.embed import embed_to_dir

    assert build_parser().parse_args(["serve", "x"]).host == "127.0.0.1"
    embed_to_dir(encoder, shapes_dir, tmp_path / "e.emb")
    build_index(tmp_path / "e.emb", tmp_path / "ix", kind="flat")
    info = json.loads((tmp_path / "ix" / "index.json").read_text())
    info["weights"] = "0" * 16
    (tmp_path / "ix" / "index.json").write_text(json.dumps(info))
    with pytest.raises(TaskError, match="other weights"):
        build_searcher(tmp_path / "ix")
