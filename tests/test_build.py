"""Build lanes: every .cu compiles with nvcc, and CI's required backends really load."""
import glob
import os
import re
import shutil
import subprocess

import pytest

from featvis_fast import _backend, _extensions

CSRC = os.path.join(os.path.dirname(__file__), "..", "csrc")
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)


@pytest.mark.skipif(NVCC is None, reason="no nvcc here")
@pytest.mark.parametrize("source", sorted(glob.glob(os.path.join(CSRC, "*.cu"))), ids=os.path.basename)
def test_cuda_sources_compile_with_nvcc(source, tmp_path):
    cmd = [NVCC, "-c", "-O3", "-std=c++17", "-gencode", "arch=compute_90,code=sm_90",
           source, "-o", str(tmp_path / "out.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower(), proc.stderr


def test_cuda_sources_exist():
    assert glob.glob(os.path.join(CSRC, "*.cu")), "no CUDA sources found"


def test_extension_source_lists_cover_csrc():
    """A kernel file left out of the JIT source list would only fail at link time on a GPU machine."""
    cu = {os.path.basename(p) for p in glob.glob(os.path.join(CSRC, "*.cu"))}
    cpu = {os.path.basename(p) for p in glob.glob(os.path.join(CSRC, "*_cpu*.cpp"))}
    assert cu <= set(_extensions.CUDA_SOURCES), cu - set(_extensions.CUDA_SOURCES)
    assert cpu <= set(_extensions.CPU_SOURCES), cpu - set(_extensions.CPU_SOURCES)
    for name in _extensions.CUDA_SOURCES + _extensions.CPU_SOURCES:
        assert os.path.exists(os.path.join(CSRC, name)), name


@pytest.mark.skipif(NVCC is None, reason="no nvcc here")
def test_cuda_sources_link_into_the_c_abi(tmp_path):
    """The torch-free .cu files link on their own (no undefined symbols) and export the C ABI of every *_cuda.h
    header."""
    sources = [os.path.join(CSRC, s) for s in _extensions.CUDA_SOURCES if s.endswith(".cu")]
    lib = tmp_path / "libfeatvis_cuda.so"
    cmd = [NVCC, "-shared", "-Xcompiler", "-fPIC", "-O1", "-std=c++17", "-gencode", "arch=compute_90,code=sm_90",
           *sources, "-Xlinker", "--no-undefined", "-o", str(lib)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    exported = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True).stdout
    declared = set()
    for path in glob.glob(os.path.join(CSRC, "*_cuda.h")):
        with open(path) as header:
            declared |= set(re.findall(r"\b(featvis_\w+)\(", header.read()))
    assert {"featvis_pixel_similarity_cuda", "featvis_rectify_cuda", "featvis_rectify_backward_cuda"} <= declared
    for name in declared:
        assert re.search(rf"\bT {name}$", exported, re.M), f"{name} is declared but not exported"


def test_required_backends_load():
    """CI sets FEATVIS_REQUIRE_BACKENDS=cpp,triton so a broken build fails instead of being skipped."""
    required = [b for b in os.environ.get("FEATVIS_REQUIRE_BACKENDS", "").split(",") if b]
    for name in required:
        assert _backend._probe(name, "cpu") is None, f"backend {name} unavailable: {_backend._probe(name, 'cpu')}"
    assert _backend._probe("torch", "cpu") is None
