"""Live configuration and the secrets that encrypt its credentials."""
