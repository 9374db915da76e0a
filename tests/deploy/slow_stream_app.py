"""A WSGI app whose one response takes STREAM_SECONDS to stream: what a large CSV export
looks like to gunicorn."""

import time

STREAM_SECONDS = 3.0
PIECES = 6


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    for piece in range(PIECES):
        time.sleep(STREAM_SECONDS / PIECES)
        yield f"piece {piece}\n".encode()
