"""The control plane's HTTP API (FastAPI) and, later, the web UI it serves."""
