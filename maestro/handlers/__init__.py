"""Command handlers (validate, decide, append) and reactors (react to events, talk to adapters)."""
