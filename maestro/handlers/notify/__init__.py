"""Reactors that talk to the outside world: completion callbacks, deliveries (docs/reactors.md)."""
