"""e3d_eval: benchmarks and reports that measure the project goals."""
