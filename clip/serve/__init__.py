"""`clip serve`: an HTTP search service (FastAPI) over a built index, with a page at `/`."""
