"""rapsam-bench: latency of the reference model and of converted artifacts, on desktops, GPUs and phones."""
