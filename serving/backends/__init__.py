"""Engines behind the gateway: one interface (`base.Backend`), one module per engine."""
