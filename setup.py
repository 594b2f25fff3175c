"""Build what is compiled: the optional Cython fast datapath (vnet_router.datapath._fastpath)
and the objects of the shipped BPF programs (vnet_router/bpf/NAME.bpf.c -> NAME.bpf.o).

Everything else lives in pyproject.toml.  Both are optional: without Cython or a C compiler
the package installs anyway and the daemon runs the reference datapath (and says so); without
clang the BPF objects are not built (said here) and the daemon compiles the programs when it
loads them if clang is there then, else says in one line that the kernel tier cannot run.

``build_bpf`` runs first in every build (wheel, sdist -> wheel, ``pip install -e``) and writes
the objects next to their sources, where the package data takes them into a wheel and where an
editable install reads them; ``python3 setup.py build_bpf`` alone rebuilds them in a checkout.
It uses the daemon's own compile command (``ops/ebpf.py``: ``clang_argv``).
"""
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Command, setup
from setuptools.command.build import build
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
BPF = os.path.join("vnet_router", "bpf")


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as e:                      # no compiler, no headers, ...
            print(f"vnet: fast datapath not built ({e}); the reference datapath will be used",
                  file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:
            print(f"vnet: fast datapath not built ({e}); the reference datapath will be used",
                  file=sys.stderr)


class BuildBpf(Command):
    """Compile vnet_router/bpf/*.bpf.c into *.bpf.o beside them (clang -target bpf)."""

    description = "compile the shipped BPF programs (needs clang; skipped with a message)"
    user_options = [("force", "f", "rebuild objects that are up to date")]
    boolean_options = ["force"]
    editable_mode = False                           # set by editable installs; same work

    def initialize_options(self):
        self.force = False

    def finalize_options(self):
        pass

    def run(self):
        sources = sorted(glob.glob(os.path.join(HERE, BPF, "*.bpf.c")))
        clang = shutil.which("clang")
        if clang is None:
            print("vnet: clang not found: the BPF programs are not prebuilt; the daemon "
                  "compiles them at load if clang is there then, else runs without the kernel "
                  "tier and the TAP capture", file=sys.stderr)
            return
        try:
            ebpf = _ebpf()
        except Exception as e:                      # never fail the install for it
            print(f"vnet: the BPF programs are not prebuilt ({e!r})", file=sys.stderr)
            return
        for src in sources:
            obj = src[:-len(".c")] + ".o"
            if not self.force and ebpf.outdated(Path(src), Path(obj)) is None:
                continue
            r = subprocess.run(ebpf.clang_argv(src, obj, clang), capture_output=True, text=True)
            if r.returncode != 0:
                print(f"vnet: {os.path.basename(src)} not prebuilt (clang exit status "
                      f"{r.returncode}); the daemon compiles it at load:\n{r.stderr[-2000:]}",
                      file=sys.stderr)
                if os.path.exists(obj):
                    os.unlink(obj)                  # no stale object stands in for it
                continue
            print(f"vnet: built {os.path.relpath(obj, HERE)}", file=sys.stderr)


def _ebpf():
    """ops/ebpf.py loaded on its own (standard library only), not the package: what is being
    built need not be importable (its dependencies may not be installed yet)."""
    spec = importlib.util.spec_from_file_location(
        "_vnet_ebpf", os.path.join(HERE, "vnet_router", "ops", "ebpf.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod                    # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


class Build(build):
    # the objects first: build_py takes them into the wheel as package data
    sub_commands = [("build_bpf", None)] + build.sub_commands


def extensions():
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("vnet: Cython missing, fast datapath not built", file=sys.stderr)
        return []
    from setuptools import Extension
    ext = Extension("vnet_router.datapath._fastpath", ["vnet_router/datapath/_fastpath.pyx"],
                    define_macros=[("_GNU_SOURCE", None)], extra_compile_args=["-O2"],
                    optional=True)
    try:
        return cythonize([ext], compiler_directives={"language_level": 3}, quiet=True)
    except Exception as e:
        print(f"vnet: cannot cythonize the fast datapath ({e})", file=sys.stderr)
        return []


setup(ext_modules=extensions(),
      cmdclass={"build": Build, "build_bpf": BuildBpf, "build_ext": OptionalBuildExt})
