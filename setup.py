"""The wheel's build hook: the CO-RE probe (bpf/) compiled into the package as package data,
when clang is there. Everything else is in pyproject.toml."""

import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
OBJECT = "oomhero/sources/ebpf/memcg_threshold.bpf.o"


class BuildWithProbe(build_py):
    def run(self) -> None:
        super().run()
        build = HERE / "bpf" / "build.py"
        if self.editable_mode or not build.exists():  # editable: make builds it in place
            return
        skipped = runpy.run_path(str(build))["build"](Path(self.build_lib) / OBJECT)
        if skipped:
            print(f"oomhero: {skipped}")


setup(cmdclass={"build_py": BuildWithProbe})
