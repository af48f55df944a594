"""Observability: Prometheus rules and config for servekit's series, a managed Prometheus, a Grafana dashboard."""
