"""Triton kernels and their launchers, one module per hot path (installed as featvis_fast.kernels).
Importing a module here imports triton; on a CPU-only machine set TRITON_INTERPRET=1 first."""
