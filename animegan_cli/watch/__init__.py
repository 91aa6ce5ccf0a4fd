"""``animegan watch``: folders followed as files arrive, styled in batches by convert's pipeline."""
