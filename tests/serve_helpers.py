"""Start a minigpt2 server on loopback at a free port, in a thread, for the serve tests."""

import contextlib
import socket
import threading
import time
from pathlib import Path

MODEL_FOLDER = Path(__file__).resolve().parent.parent / "minigpt2" / "models" / "tiny-shakespeare"
MODEL_NAME = "tiny-shakespeare"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(model, tokenizer, **options):
    """Yield (base_url, app) while uvicorn serves create_app(...) in a background thread."""
    import uvicorn

    from minigpt2.serve.app import create_app

    app = create_app(model, tokenizer, MODEL_NAME, **options)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)
