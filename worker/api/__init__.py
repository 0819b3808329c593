"""HTTP: FastAPI app, routes, webhook verification."""
