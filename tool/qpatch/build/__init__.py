"""Stage 7, building: CMake configure and build of a checkout for CPU or CUDA, with progress, a log,
the family's CMake definitions and the user's own -D kept per build directory (cmake.py)."""
