"""Where a run's work is done besides the local loop: Ray actors, video clips."""
