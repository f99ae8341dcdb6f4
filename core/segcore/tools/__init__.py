"""Tools above the engine: benchmarks and publishing a finished run as a model folder."""
