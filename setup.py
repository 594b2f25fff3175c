"""Build the optional Cython fast datapath (vnet_router.datapath._fastpath).

Everything else lives in pyproject.toml.  The extension is optional: without Cython or a C
compiler the package installs anyway and the daemon runs the reference datapath (and says so).
"""
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


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


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
