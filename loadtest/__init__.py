"""Load tests and benchmarks. Speaks HTTP only: never imports `serving`."""
