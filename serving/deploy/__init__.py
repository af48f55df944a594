"""Deployment manifests rendered from servekit's settings (`servekit deploy k8s`)."""
