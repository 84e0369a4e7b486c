"""The numeric codes that every op's Python, Triton, C++ and CUDA sides share.

Defined here for Python and Triton (kernels/ import this module) and once for C++ and CUDA in
csrc/featvis_abi.h; tests/test_abi.py checks that the two definitions agree and that no other
source defines them again. Nothing here imports anything, so every layer may import it.
"""

# rectifier rules (featvis::rectify_backward; semantics: _rectifier_reference)
RULE_BACKPROP, RULE_DECONVNET, RULE_GUIDED = 0, 1, 2

# pixel-similarity metrics (featvis::pixel_similarity; semantics: _reference)
METRIC_INNER, METRIC_ANGULAR, METRIC_EUCLIDEAN = 0, 1, 2

# gradient-ascent optimizers (featvis::ascent_step; semantics: _ascent_reference)
OPTIMIZER_SGD, OPTIMIZER_ADAM, OPTIMIZER_NESTEROV = 0, 1, 2

# storage dtypes crossing the torch-free CUDA C ABI
DTYPE_FLOAT32, DTYPE_FLOAT16, DTYPE_BFLOAT16, DTYPE_INT8 = 0, 1, 2, 3

CODES = {name: value for name, value in globals().items() if name.isupper() and isinstance(value, int)}
