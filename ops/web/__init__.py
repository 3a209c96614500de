"""The web side of central ops: dashboard pages, live updates, metrics and the public feed."""
