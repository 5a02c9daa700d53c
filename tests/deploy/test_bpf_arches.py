"""The CO-RE probe built for each architecture an image is built for (x86-64, arm64): the
kprobe programs read the charge's arguments from that architecture's registers; the fentry
programs, which take them from BTF, are the same bytes for both. Loaded for real only on x86-64
(the guest's kernels, tests/real_kernel/test_ebpf.py): no arm64 kernel boots here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO

BUILD = REPO / "bpf" / "build.py"
# try_charge_memcg(memcg, gfp_mask, nr_pages): the probe reads the 1st and 3rd arguments.
# x86-64: di and dx in struct pt_regs; arm64: x0 and x2 in struct user_pt_regs.
ARGUMENT_OFFSETS = {"x86": {112, 96}, "arm64": {0, 16}}
LOAD_FROM_CTX = re.compile(r"= \*\(u64 \*\)\(r1 \+ (\d+)\)")

pytestmark = pytest.mark.skipif(
    not shutil.which("clang") or not shutil.which("llvm-objdump"),
    reason="clang and llvm-objdump build and read the probe (.ci/run installs them)",
)


def build(arch: str, out) -> None:
    result = subprocess.run(
        [sys.executable, str(BUILD), "--arch", arch, str(out)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def section(obj, name: str) -> str:
    text = subprocess.run(
        ["llvm-objdump", "-d", f"--section={name}", str(obj)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return text.split("Disassembly of section", 1)[1]


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    out = tmp_path_factory.mktemp("bpf")
    for arch in ARGUMENT_OFFSETS:
        build(arch, out / f"{arch}.bpf.o")
    return {arch: out / f"{arch}.bpf.o" for arch in ARGUMENT_OFFSETS}


@pytest.mark.parametrize("arch", sorted(ARGUMENT_OFFSETS))
def test_kprobe_reads_the_arguments_from_this_architectures_registers(objects, arch):
    code = section(objects[arch], "kprobe/try_charge_memcg")
    loads = [int(offset) for offset in LOAD_FROM_CTX.findall(code)]
    assert set(loads[:2]) == ARGUMENT_OFFSETS[arch], code[:600]


def test_fentry_is_the_same_for_both(objects):
    x86, arm64 = (section(objects[a], "fentry/try_charge_memcg") for a in ("x86", "arm64"))
    assert x86.replace("x86", "") == arm64.replace("arm64", ""), (x86[:400], arm64[:400])


def test_an_unknown_architecture_is_a_usage_error(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BUILD), "--arch", "mips", str(tmp_path / "x.o")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "usage:" in result.stderr
    assert not (tmp_path / "x.o").exists()
