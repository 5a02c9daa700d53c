"""Compile the CO-RE probe: ``python3 bpf/build.py [--arch x86|arm64] OUT.bpf.o``. Run by
``make`` and by the wheel build (setup.py), for the machine it runs on (an image built for
arm64 builds its wheel on arm64, natively or emulated). Without clang it says so and builds
nothing: oomhero then uses bcc.

One source for both: CO-RE relocates the kernel structs the probe reads, and its fentry programs
take their arguments from BTF. Only the kprobe programs (kernels without fentry) read registers,
through bpf_tracing.h's PT_REGS_PARM*, which differ per architecture: -D__TARGET_ARCH_<arch>,
and for arm64 its register struct (arm64_regs.h), which bpf/vmlinux.h (x86-64's) lacks.

After the compile, user space's ctypes layouts of the maps and the ring buffer's record
(oomhero/sources/ebpf/maps.py) are checked against the object's BTF: one edited without the
other fails the build, not the probe's first crossing."""

from __future__ import annotations

import importlib.util
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
# The BTF reader and the ctypes layouts, loaded by path: the package's dependencies need not be
# installed where the wheel is built.
USER_SPACE = HERE.parent / "oomhero" / "sources" / "ebpf"
SOURCE = HERE / "memcg_threshold.bpf.c"
CFLAGS = ("-target", "bpf", "-g", "-O2", "-Wall", "-Werror")
ARCHES = {"x86": (), "arm64": ("-include", str(HERE / "arm64_regs.h"))}
MACHINES = {"x86_64": "x86", "amd64": "x86", "aarch64": "arm64", "arm64": "arm64"}


def this_arch() -> str:
    machine = platform.machine()
    if machine not in MACHINES:
        raise ValueError(f"no kprobe registers known for {machine} (known: {', '.join(ARCHES)})")
    return MACHINES[machine]


class LayoutDrift(Exception):
    """The object's BTF and user space's ctypes layouts differ."""


def _by_path(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"_oomhero_build_{name}", USER_SPACE / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def check_layouts(obj: Path) -> None:
    """LayoutDrift naming each struct or map where maps.py differs from ``obj``'s BTF."""
    btf, maps = _by_path("btf"), _by_path("maps")
    problems = btf.drift(obj, maps.STRUCTS, maps.VARIABLES, maps.MAPS)
    if problems:
        raise LayoutDrift("; ".join(problems))


def build(out: Path, arch: str | None = None) -> str | None:
    """Compile into ``out`` for ``arch`` (default: this machine's) and check user space's
    layouts against it; returns why nothing was built (no clang), raises on a compile error
    (CalledProcessError) or a layout that differs (LayoutDrift, the object removed)."""
    clang = shutil.which("clang")
    if clang is None:
        return "no clang: the CO-RE probe is not built, oomhero will use bcc where it can"
    arch = arch or this_arch()
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [clang, *CFLAGS, f"-D__TARGET_ARCH_{arch}", *ARCHES[arch], f"-I{HERE}"]
    subprocess.run([*command, "-c", str(SOURCE), "-o", str(out)], check=True)
    try:
        check_layouts(out)
    except LayoutDrift:
        out.unlink()  # make would take a kept object as built
        raise
    return None


def main(argv: list[str]) -> int:
    arch = None
    if argv[:1] == ["--arch"] and len(argv) > 1:
        arch, argv = argv[1], argv[2:]
    if len(argv) != 1 or (arch is not None and arch not in ARCHES):
        print(f"usage: bpf/build.py [--arch {'|'.join(ARCHES)}] OUT.bpf.o", file=sys.stderr)
        return 2
    try:
        skipped = build(Path(argv[0]), arch)
    except subprocess.CalledProcessError as exc:
        return exc.returncode
    except ValueError as exc:
        print(f"bpf/build.py: {exc}", file=sys.stderr)
        return 2
    except LayoutDrift as exc:
        print(f"bpf/build.py: oomhero/sources/ebpf/maps.py is out of step: {exc}", file=sys.stderr)
        return 1
    if skipped:
        print(f"bpf/build.py: {skipped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
