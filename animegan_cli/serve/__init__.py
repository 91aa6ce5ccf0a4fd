"""`animegan serve`: the HTTP app, its service, limits, transport and page."""
