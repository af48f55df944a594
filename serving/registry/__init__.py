"""The model registry: versions of base models (and, later, adapters) kept in the BentoML model store.

A version is a directory of HF-format weights plus `manifest.json`; `training/` writes such directories,
`serving/` reads them. The registry is the contract between the two.
"""
