"""Helpers of the task tests: the `clip` command in a subprocess, test folders' constants."""

import contextlib
import io
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PHOTOS = os.path.join(ROOT, "tests", "data", "images")
# held-out images (a seed the training set never used) of colours the embedded model tells apart
COLOUR_COMBOS = [("red", "circle"), ("blue", "circle"), ("yellow", "circle"), ("green", "circle")]


def run_clip(*args, env=None, check=True, subprocess_=False):
    """`clip ARGS` offline: in this process (fast: the framework is imported once), or with
    subprocess_=True as `python -m clip` in a new process (end to end: exit status, stderr).

    Returns a CompletedProcess; asserts success when `check`.
    """
    args = [str(a) for a in args]
    if subprocess_:
        full_env = dict(os.environ, HF_HUB_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
        proc = subprocess.run([sys.executable, "-m", "clip", *args], capture_output=True, text=True, env=full_env, cwd=ROOT)
    else:
        assert not env, "environment variables need subprocess_=True"
        from clip.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exit:  # argparse errors
                code = exit.code
        proc = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def run_json(*args, **kwargs):
    return json.loads(run_clip(*args, "--json", **kwargs).stdout)
