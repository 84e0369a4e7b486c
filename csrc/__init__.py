"""C++ and CUDA sources of featvis-fast; built on first use by featvis_fast._extensions."""
