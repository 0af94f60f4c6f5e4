"""Exact cosine top-k against a full sort; index loading; near duplicates."""

import numpy as np
import pytest

from clip.tasks.backends import TaskError
from clip.tasks.search import EmbeddingIndex, near_duplicates, topk_cosine


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("chunk_rows", [7, 64, 100_000])
def test_topk_equals_a_full_sort(chunk_rows):
    rng = np.random.default_rng(0)
    vectors, queries = _unit(rng.standard_normal((300, 16))), _unit(rng.standard_normal((5, 16)))
    scores, indices = topk_cosine(queries, vectors, k=10, chunk_rows=chunk_rows)
    full = queries @ vectors.T
    expected = np.argsort(-full, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), atol=1e-6)


def test_ties_go_to_the_lower_index_and_k_is_capped():
    vectors = np.array([[1, 0], [0, 1], [1, 0], [1, 0]], np.float32)
    scores, indices = topk_cosine([[1, 0]], vectors, k=10, chunk_rows=2)
    assert indices.tolist() == [[0, 2, 3, 1]] and scores.shape == (1, 4)
    with pytest.raises(TaskError, match="dimensions"):
        topk_cosine([[1, 0, 0]], vectors, k=1)


def test_index_search_returns_sources_and_normalizes():
    index = EmbeddingIndex(np.array([[2, 0], [0, 3], [1, 1]], np.float32), ["a", "b", "c"])
    hits = index.search(np.array([[5, 4]], np.float32), k=2)[0]
    assert [(h.source, h.index) for h in hits] == [("c", 2), ("a", 0)]
    assert hits[0].score == pytest.approx((5 + 4) / np.sqrt(41) / np.sqrt(2), abs=1e-6)


def test_near_duplicates():
    vectors = np.array([[1, 0], [0.999, 0.04], [0, 1], [0.02, 1]], np.float32)
    pairs = near_duplicates(vectors, 0.99, chunk_rows=3)
    # cosines: (2, 3) 1 / sqrt(1.0004) = 0.9998, (0, 1) 0.999 / sqrt(0.999601) = 0.9992; the rest ~0.04
    assert [(i, j) for i, j, _ in pairs] == [(2, 3), (0, 1)]
    assert [s for _, _, s in pairs] == pytest.approx([1 / np.sqrt(1.0004), 0.999 / np.sqrt(0.999601)], abs=1e-6)
