"""Training CLIP: `clip train` (clip.train.cli), the framework-neutral pieces (clip.train.common)
and one trainer per backend (clip.train.pt; tf and flax to follow in the same shape).

Importing this package imports no deep-learning framework.
"""
