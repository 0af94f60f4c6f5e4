"""Runs `clip ARGS` in this process and SIGKILLs it (as a crash would) right after its embedding run
has committed N chunks to the manifest: the resume tests' crash, kept out of the library.

    python tests/tasks/kill_after_chunks.py N embed FOLDER --out DIR ...
"""

import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def kill_after(chunks: int) -> None:
    """Patch the chunk writer's commit point (the manifest write) to kill the process after `chunks` commits."""
    from clip.tasks.embed import store

    commit = store.ChunkWriter._commit

    def commit_then_crash(self):
        commit(self)
        self.test_commits = getattr(self, "test_commits", 0) + 1
        if self.test_commits >= chunks:
            os.kill(os.getpid(), signal.SIGKILL)

    store.ChunkWriter._commit = commit_then_crash


if __name__ == "__main__":
    sys.path.insert(0, ROOT)  # the checkout's clip, as `python -m clip` from ROOT imports it
    kill_after(int(sys.argv[1]))
    from clip.cli import main

    sys.exit(main(sys.argv[2:]))
