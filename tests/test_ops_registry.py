"""The op registry (featvis_fast/ops/_registry.py): every op family's sources are listed and exist,
every registered op is found in them, and the dispatch rule (reference for backend torch and for
float64) holds for every family."""
import pathlib

import pytest
import torch

from featvis_fast import ops
from featvis_fast.ops import _registry, ascent, dissection, extremal, lrp, patches, perturbation, rectifier, similarity

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAMILY_MODULES = {"rectifier": rectifier, "perturbation": perturbation, "patches": patches, "ascent": ascent,
                  "dissection": dissection, "extremal": extremal, "lrp": lrp,
                  "similarity": similarity}


def _text(path: str) -> str:
    return (ROOT / path).read_text()


def test_every_op_family_module_is_in_the_registry():
    modules = {p.stem for p in (ROOT / "featvis_fast" / "ops").glob("*.py") if not p.stem.startswith("_")}
    assert modules == set(_registry.SOURCES) == set(FAMILY_MODULES)


def test_every_kernel_source_file_belongs_to_one_op_family():
    listed = [f for s in _registry.SOURCES.values() for f in (*s.cpp, *s.cuda)]
    assert len(listed) == len(set(listed))
    glue = {"bindings_cpu.cpp", "bindings_cuda.cpp", "cpu_cache.cpp", "cpu_cache.h", "featvis_abi.h",
            "cuda_convert.h", "cpu_common.h", "similarity_cuda_common.h", "similarity_cpu_avx2.h"}
    on_disk = {f"csrc/{p.name}" for p in (ROOT / "csrc").iterdir() if p.suffix in (".h", ".cpp", ".cu")}
    assert on_disk - {f"csrc/{g}" for g in glue} == set(listed)


@pytest.mark.parametrize("family", sorted(_registry.SOURCES))
def test_the_sources_of_a_family_exist_and_name_its_ops(family):
    src = _registry.SOURCES[family]
    for path in (src.layer, src.reference, src.triton, *src.cpp, *src.cuda):
        assert (ROOT / path).is_file(), path
    kernels = FAMILY_MODULES[family].KERNELS
    assert kernels.triton == pathlib.Path(src.triton).stem
    for op in src.ops:
        assert hasattr(torch.ops.featvis, op), op
        assert f'"featvis::{op}"' in _text(src.layer), op
        assert getattr(ops, op) is not None
    for op in kernels.launchers:  # every kernel entry point exists in the C++ and CUDA bindings
        assert f'm.def("{op}"' in _text("csrc/bindings_cpu.cpp"), op
        assert f'm.def("{op}"' in _text("csrc/bindings_cuda.cpp"), op
        assert f"def {kernels.launchers[op]}(" in _text(src.triton), op


@pytest.mark.parametrize("family", sorted(_registry.SOURCES))
def test_backend_torch_and_float64_run_the_reference_and_unknown_backends_are_refused(family):
    kernels = FAMILY_MODULES[family].KERNELS
    assert kernels.for_call("torch", torch.float32) is None
    assert kernels.for_call("cpp", torch.float64) is None
    assert kernels.for_call("triton", torch.float64) is None
    with pytest.raises(ValueError, match="backend must be one of"):
        kernels.for_call("tpu", torch.float32)


def test_a_triton_module_exposes_the_ops_launchers():
    pytest.importorskip("triton")
    module = rectifier.KERNELS.module("triton")
    from featvis_fast.kernels import rectifier as triton_rectifier

    assert module.rectify is triton_rectifier.rectify_triton
    assert module.rectify_backward is triton_rectifier.rectify_backward_triton
