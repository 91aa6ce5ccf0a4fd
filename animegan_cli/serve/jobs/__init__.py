"""serve's jobs: big batches stored on disk and styled in the background (POST /jobs).

``store.py`` keeps jobs and their files (SQLite in WAL mode, uploads and results on disk),
``runner.py`` styles queued files through the server's engine thread at low priority,
``routes.py`` is the HTTP API and attaches both to the app. See docs/serve.md, "Jobs".
"""
