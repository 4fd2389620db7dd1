"""Notify: completion callbacks, Slack, cost digests (deliveries as events)."""
