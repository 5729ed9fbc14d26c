"""Build the C core of ctracemalloc.

Build switches, read from the environment:

  CTRACEMALLOC_DEV=1       warnings are errors (-Wall -Wextra -Werror): the
                           test build uses this.
  CTRACEMALLOC_SANITIZE=1  AddressSanitizer and UndefinedBehaviorSanitizer,
                           no optimisation, frame pointers kept.
  CTRACEMALLOC_DEBUG=1     -O0 -g3.

These three builds check the core's invariants (CTM_DEBUG: CTM_ASSERT in
util.h; traced memory never negative, the live trace counts, the tables
lock held where a function says it is) and stop at a wrong count of live
traces, which a release build mends (CTM_SELF_CHECK: see
ctm_traces_place_unlocked). The sanitizer and debug builds also take paths
that only races take otherwise (CTM_LATE_FILENAMES: see
ctm_tracer_snapshot), so that the suite runs them.
"""
import glob
import os

from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class build_py_with_pth(build_py):
    """Also put ctracemalloc-startup.pth at the top of the build, so that
    it is installed into site-packages itself, where site reads .pth
    files: it starts tracing at startup when CTRACEMALLOC is set."""

    def run(self):
        super().run()
        self.copy_file(os.path.join("src", "ctracemalloc-startup.pth"),
                       os.path.join(self.build_lib,
                                    "ctracemalloc-startup.pth"))

    def get_outputs(self, *args, **kwargs):
        return super().get_outputs(*args, **kwargs) + [
            os.path.join(self.build_lib, "ctracemalloc-startup.pth")]


def flag(name):
    return os.environ.get(name, "") not in ("", "0")


# Functions on 64-byte and loops on 32-byte boundaries: the hooks and the
# passes over the traces are short loops whose speed otherwise depends on
# where the rest of the core happens to place them.
compile_args = ["-std=c11", "-fvisibility=hidden", "-fno-strict-aliasing",
                "-falign-functions=64", "-falign-loops=32"]
link_args = []
macros = []

if flag("CTRACEMALLOC_DEV") or flag("CTRACEMALLOC_SANITIZE"):
    compile_args += ["-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers",
                     "-Wno-cast-function-type"]
if (flag("CTRACEMALLOC_DEV") or flag("CTRACEMALLOC_SANITIZE")
        or flag("CTRACEMALLOC_DEBUG")):
    macros += [("CTM_SELF_CHECK", "1"), ("CTM_DEBUG", "1")]
if flag("CTRACEMALLOC_SANITIZE"):
    san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
           "-fno-omit-frame-pointer"]
    compile_args += san + ["-O1", "-g"]
    link_args += san
    macros.append(("CTM_LATE_FILENAMES", "1"))
elif flag("CTRACEMALLOC_DEBUG"):
    compile_args += ["-O0", "-g3"]
    macros.append(("CTM_LATE_FILENAMES", "1"))
else:
    compile_args += ["-O2"]
    macros.append(("NDEBUG", "1"))

core = Extension(
    "ctracemalloc._ctracemalloc",
    sources=sorted(glob.glob("src/ctracemalloc/_core/*.c")),
    depends=sorted(glob.glob("src/ctracemalloc/_core/*.h")),
    include_dirs=["src/ctracemalloc/_core", "src/ctracemalloc/include"],
    define_macros=macros,
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    libraries=["m"],            # the sampler's log, the estimates' expm1
)

# A shared object of its own whose allocator calls go through its GOT, as
# an extension's do: the native tracer's probe (and the tests' source of
# native calls).
probe = Extension(
    "ctracemalloc._nativeprobe",
    sources=["src/ctracemalloc/_nativeprobe.c"],
    depends=["src/ctracemalloc/_core/native.h"],
    include_dirs=["src/ctracemalloc/_core"],
    define_macros=macros,
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

setup(ext_modules=[core, probe], cmdclass={"build_py": build_py_with_pth})
