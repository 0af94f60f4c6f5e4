"""Importing the library, and loading TensorFlow through the tasks, leaves os.environ as it found it."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHECK = textwrap.dedent("""
    import importlib, os, pathlib, sys
    before = dict(os.environ)
    import clip
    root = pathlib.Path(clip.__file__).parent
    skip = ("clip.pt", "clip.tf", "clip.flax", "clip.train", "clip.__main__")  # framework packages
    for path in sorted(root.rglob("*.py")):
        name = ".".join(("clip",) + path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        if not name.startswith(skip):
            importlib.import_module(name)
    changed = {k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}
    assert not changed, f"importing clip changed {sorted(changed)}"
    from clip.tasks.quiet_tensorflow import TF_LOG_LEVEL_ENV, import_tensorflow_quietly
    import_tensorflow_quietly()
    assert "tensorflow" in sys.modules
    assert os.environ.get(TF_LOG_LEVEL_ENV) == before.get(TF_LOG_LEVEL_ENV), os.environ.get(TF_LOG_LEVEL_ENV)
    print("imported", len([m for m in sys.modules if m.startswith("clip.")]))
""")


def test_imports_and_tensorflow_loading_leave_the_environment_alone():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    unset = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )
    assert unset.returncode == 0, unset.stderr[-3000:]
    assert int(unset.stdout.split()[-1]) > 40  # the walk reached the library's modules
    # TensorFlow's CPU-feature notice is what the level hides while it starts
    assert "cpu_feature_guard" not in unset.stderr
