"""The numeric codes every op's languages share are defined once per side and agree: Python and
Triton in featvis_fast/_abi.py, C++ and CUDA in csrc/featvis_abi.h."""
import pathlib
import re

from featvis_fast import _abi, _rectifier_reference, _reference
from featvis_fast.ops import ascent

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAMILIES = ("RULE", "METRIC", "OPTIMIZER", "DTYPE")
HEADER_DEFINE = re.compile(r"^#define FEATVIS_((?:%s)_\w+) (\d+)" % "|".join(FAMILIES), re.M)


def _header_codes(path: pathlib.Path) -> dict[str, int]:
    return {name: int(value) for name, value in HEADER_DEFINE.findall(path.read_text())}


def test_the_c_header_and_the_python_module_define_the_same_codes():
    assert _header_codes(ROOT / "csrc" / "featvis_abi.h") == _abi.CODES
    assert set(name.split("_")[0] for name in _abi.CODES) == set(FAMILIES)


def test_no_other_c_or_cuda_source_defines_a_code_again():
    sources = [p for p in (ROOT / "csrc").iterdir() if p.suffix in (".h", ".cpp", ".cu") and p.name != "featvis_abi.h"]
    assert sources
    again = {p.name: codes for p in sources if (codes := _header_codes(p))}
    assert not again, again
    literal = re.compile(r"k(?:Inner|Angular|Euclidean|Rule\w+|Optimizer\w+)\s*=\s*\d")
    assert not [p.name for p in sources if literal.search(p.read_text())]


def test_no_python_or_triton_source_defines_a_code_again():
    redefinition = re.compile(r"^_?(?:INNER|ANGULAR|EUCLIDEAN|BACKPROP|DECONVNET|GUIDED)\b[\w, ]*=\s*\d", re.M)
    files = [p for p in [*(ROOT / "featvis_fast").rglob("*.py"), *(ROOT / "kernels").glob("*.py")]
             if p.name != "_abi.py" and "csrc" not in p.parts]
    assert len(files) > 20
    assert not [str(p.relative_to(ROOT)) for p in files if redefinition.search(p.read_text())]


def test_the_references_and_the_op_layer_use_the_shared_codes():
    assert (_rectifier_reference.BACKPROP, _rectifier_reference.DECONVNET, _rectifier_reference.GUIDED) == (
        _abi.RULE_BACKPROP, _abi.RULE_DECONVNET, _abi.RULE_GUIDED)
    assert (_reference.INNER, _reference.ANGULAR, _reference.EUCLIDEAN) == (
        _abi.METRIC_INNER, _abi.METRIC_ANGULAR, _abi.METRIC_EUCLIDEAN)
    assert ascent.OPTIMIZER_CODES == {"sgd": _abi.OPTIMIZER_SGD, "adam": _abi.OPTIMIZER_ADAM,
                                      "nesterov": _abi.OPTIMIZER_NESTEROV}
