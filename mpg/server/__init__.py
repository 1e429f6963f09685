"""`mpg serve`: an OpenAI-compatible HTTP server with per-request personas and continuous batching.

Needs the optional extra `serve` (FastAPI, uvicorn, prometheus-client): pip install "mpg[serve]".
"""

from __future__ import annotations

__all__ = ["create_app", "serve"]


def create_app(engine, **kwargs):
    """The FastAPI app serving `engine` (see `mpg.server.app.create_app` for the keywords)."""
    from .app import create_app as _create

    return _create(engine, **kwargs)


def serve(
    engine, *, host="127.0.0.1", port=8000, shutdown_timeout=30.0, log_level="warning", **kwargs
) -> None:
    """Serve until SIGINT/SIGTERM. On a signal: new requests get 503 (and the socket closes), requests in
    flight get `shutdown_timeout` seconds to finish, then are cancelled; then the process exits."""
    import uvicorn

    app = create_app(engine, **kwargs)
    scheduler = app.state.scheduler

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            scheduler.stop_admitting()
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal after its shutdown (the process then dies of it); a graceful
            # shutdown is a normal end here: exit status 0, no KeyboardInterrupt traceback
            self._captured_signals.clear()

    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=shutdown_timeout
    )
    Server(config).run()
