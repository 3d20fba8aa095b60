"""Declares the one native extension, featurecore._core, built from csrc/.

FEATURECORE_SANITIZE=1 builds with AddressSanitizer + UndefinedBehaviorSanitizer
(run the tests with `bash .ci/sanitize`, which preloads the runtimes).
"""
import os
import sys
from glob import glob

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

compile_args = ["-O3", "-Wall", "-Wextra", "-Wno-unused-parameter"]
link_args = []
if os.environ.get("FEATURECORE_SANITIZE") == "1":
    flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
    compile_args = ["-O1", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter"] + flags
    link_args = flags

# Compile the translation units in parallel (the machines have 2 cores).
ParallelCompile("FEATURECORE_BUILD_JOBS", default=2).install()

ext = Pybind11Extension(
    "featurecore._core",
    sorted(glob("csrc/*.cc") + glob("csrc/*.cpp")),
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
