"""People: users, groups, login, sessions, tokens, the audit log."""
