"""Commands that measure or transform: tune, measure, export, system info."""
