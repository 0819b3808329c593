"""The console: server-rendered pages at /console for support and operators (sign-in, leads,
operations), served by the API process. `router` and `install` are worker/console/app.py's."""

from worker.console.app import install, router

__all__ = ["install", "router"]
