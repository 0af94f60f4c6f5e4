"""Convert CLIP checkpoints between formats (the same as `clip convert`).

    .venv/bin/python tools/convert_weights.py SRC DST [--from FORMAT] [--to FORMAT] [--dtype float32|float16|bfloat16]

See clip/convert.py for the formats; --help for the options.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from clip.convert_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
