"""Build lanes: every .cu compiles with nvcc, and CI's required backends really load."""
import glob
import os
import shutil
import subprocess

import pytest

from featvis_fast import _backend

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


def test_required_backends_load():
    """CI sets FEATVIS_REQUIRE_BACKENDS=cpp,triton so a broken build fails instead of being skipped."""
    required = [b for b in os.environ.get("FEATVIS_REQUIRE_BACKENDS", "").split(",") if b]
    for name in required:
        assert _backend._probe(name, "cpu") is None, f"backend {name} unavailable: {_backend._probe(name, 'cpu')}"
    assert _backend._probe("torch", "cpu") is None
