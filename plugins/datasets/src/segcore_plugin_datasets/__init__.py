"""segcore-plugin-datasets: loaders for the raw releases of the segmentation benchmarks."""
