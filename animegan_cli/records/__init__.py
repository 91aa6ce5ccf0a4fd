"""Provenance records, the manifest, and deciding what is up to date."""
