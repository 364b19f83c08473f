"""The web status page of `tidemark serve` (and of `tidemark up`): see `app.py`."""
