"""Helpers of the task tests: the `clip` command in a subprocess, test folders' constants."""

import contextlib
import io
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# `python KILL_SCRIPT N ARGS`: `clip ARGS`, SIGKILLed after its embedding run committed N chunks (see the script)
KILL_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kill_after_chunks.py")
PHOTOS = os.path.join(ROOT, "tests", "data", "images")
# held-out images (a seed the training set never used) of colours the embedded model tells apart
COLOUR_COMBOS = [("red", "circle"), ("blue", "circle"), ("yellow", "circle"), ("green", "circle")]


def run_clip(*args, env=None, check=True, subprocess_=False, kill_after_chunks=None):
    """`clip ARGS` offline: in this process (fast: the framework is imported once), or with
    subprocess_=True as `python -m clip` in a new process (end to end: exit status, stderr).
    kill_after_chunks=N (a new process): SIGKILLed once its embedding run committed N chunks.

    Returns a CompletedProcess; asserts success when `check`.
    """
    args = [str(a) for a in args]
    if subprocess_:
        full_env = dict(os.environ, HF_HUB_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
        command = (
            [sys.executable, "-m", "clip"]
            if kill_after_chunks is None
            else [sys.executable, KILL_SCRIPT, str(kill_after_chunks)]
        )
        proc = subprocess.run([*command, *args], capture_output=True, text=True, env=full_env, cwd=ROOT)
    else:
        assert not env and kill_after_chunks is None, "environment variables and kills need subprocess_=True"
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
