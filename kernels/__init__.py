"""numba kernels: numpy in, numpy out; no I/O, no Dask, no globals."""
