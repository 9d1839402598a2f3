"""Optional integrations; each imports its library only when it is itself imported."""
