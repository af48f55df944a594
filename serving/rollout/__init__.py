"""Canary rollouts: a pure policy, observers that measure versions, gates, a controller that applies decisions."""
