"""Shadow traffic: copies of a route's requests sent to a candidate version, answered by the primary alone, the
two answers compared (errors, latency, output agreement)."""
