"""Training CLIP: `clip.train.fit(TrainOptions(...))` or `clip train` (clip.train.cli), one loop
(clip.train.loop) over one small backend per framework (clip.train.pt, clip.train.tf, clip.train.flax,
mirroring each other) and the framework-neutral pieces (clip.train.common).

Importing this package imports no deep-learning framework.
"""

from clip.train.loop import Callback, StepInfo, fit
from clip.train.options import TrainOptions

__all__ = ["Callback", "StepInfo", "TrainOptions", "fit"]
