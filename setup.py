"""The wheel's build hook: the CO-RE probe (bpf/) compiled into the package as package data,
when clang is there, and the bcc fallback's source beside it (bcc compiles it at run time).
Everything else is in pyproject.toml."""

import runpy
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PACKAGE = "oomhero/sources/ebpf"
OBJECT = f"{PACKAGE}/memcg_threshold.bpf.o"
BCC_SOURCES = ("memcg_threshold_bcc.c", "memcg_threshold.h")


class BuildWithProbe(build_py):
    def run(self) -> None:
        super().run()
        build = HERE / "bpf" / "build.py"
        if self.editable_mode or not build.exists():  # editable: make builds it in place
            return
        skipped = runpy.run_path(str(build))["build"](Path(self.build_lib) / OBJECT)
        if skipped:
            print(f"oomhero: {skipped}")
        shipped = Path(self.build_lib) / PACKAGE / "bpf"
        shipped.mkdir(parents=True, exist_ok=True)
        for name in BCC_SOURCES:
            shutil.copy2(HERE / "bpf" / name, shipped / name)


setup(cmdclass={"build_py": BuildWithProbe})
