"""The AnimeGANv2 generator and its checkpoints (registry, download, verification)."""
