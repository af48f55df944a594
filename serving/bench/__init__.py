"""`servekit bench`: every comparison measured back to back in one run on one machine, written as bench.json,
bench.md and PNG plots. One module per section; `harness` runs them."""
