"""Compile the CO-RE probe: ``python3 bpf/build.py OUT.bpf.o``. Run by ``make`` and by the wheel
build (setup.py). Without clang it says so and builds nothing: oomhero then uses bcc."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "memcg_threshold.bpf.c"
# The object reads x86-64 registers in its kprobe programs (bpf_tracing.h's PT_REGS_PARM*).
CFLAGS = ("-target", "bpf", "-g", "-O2", "-D__TARGET_ARCH_x86", "-Wall", "-Werror")


def build(out: Path) -> str | None:
    """Compile into ``out``; returns why nothing was built (no clang), raises on a compile
    error."""
    clang = shutil.which("clang")
    if clang is None:
        return "no clang: the CO-RE probe is not built, oomhero will use bcc where it can"
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([clang, *CFLAGS, f"-I{HERE}", "-c", str(SOURCE), "-o", str(out)], check=True)
    return None


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT.bpf.o")
    try:
        skipped = build(Path(sys.argv[1]))
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode)
    if skipped:
        print(f"bpf/build.py: {skipped}", file=sys.stderr)
