"""Persisted approximate-nearest-neighbour indexes over embedding directories (`clip index`).

from clip.index import build_index
build_index("photos.emb")                      # -> photos.emb/index, sized to 4 GB
EmbeddingIndex.load("photos.emb")              # uses photos.emb/index when it is up to date
"""

from clip.index.build import build_index, parse_memory

__all__ = ["build_index", "parse_memory"]
