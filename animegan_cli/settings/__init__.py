"""Settings: the config file (and, next, every setting declared once)."""
