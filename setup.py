"""Packaging. Compiled code is not built here: the C++/CUDA extensions are JIT-built with ninja
on first use and cached (featvis_fast/_extensions.py), because a build step would need torch in
pip's isolated build environment, which pulls a multi-GB CUDA wheel. `kernels/` (Triton) and
`csrc/` (C++/CUDA sources) ship inside the package as featvis_fast.kernels / featvis_fast.csrc.
Subpackages are found automatically: a new one needs no entry here."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["featvis_fast", "featvis_fast.*"]) + ["featvis_fast.kernels", "featvis_fast.csrc"],
    package_dir={"featvis_fast": "featvis_fast", "featvis_fast.kernels": "kernels", "featvis_fast.csrc": "csrc"},
    package_data={"featvis_fast": ["data/*"], "featvis_fast.csrc": ["*.cpp", "*.cu", "*.h"],
                  "featvis_fast.viewer": ["static/*"]},
    include_package_data=False,
)
