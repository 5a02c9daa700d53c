"""PID 1 of a test pod: names itself "pause" (like Kubernetes' pause container), starts each
container's shell command with its output in <spec dir>/<name>.out, and reaps children.

usage: pod_init.py SPEC.json   (SPEC: {"container name": "shell command", ...})
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

PR_SET_NAME = 15


def main() -> int:
    ctypes.CDLL(None).prctl(PR_SET_NAME, b"pause", 0, 0, 0)
    spec_path = Path(sys.argv[1])
    for name, shell in json.loads(spec_path.read_text()).items():
        out = open(spec_path.parent / f"{name}.out", "w")
        subprocess.Popen(["sh", "-c", shell], stdout=out, stderr=subprocess.STDOUT)
    while True:  # reap, as an init must, until every child is gone
        try:
            os.wait()
        except ChildProcessError:
            return 0


if __name__ == "__main__":
    sys.exit(main())
