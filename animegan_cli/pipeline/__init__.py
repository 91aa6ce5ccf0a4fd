"""A conversion run: planning, decoding workers, the styling loop, the writer."""
