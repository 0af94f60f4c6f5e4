"""Training CLIP: `clip train` (clip.train.cli), the framework-neutral pieces (clip.train.common)
and one trainer per backend (clip.train.pt, clip.train.tf, clip.train.flax, mirroring each other).

Importing this package imports no deep-learning framework.
"""
