"""Fixtures for every test under tests/ (its subfolders included). Plain shared functions and
constants are in tests/helpers.py; the names imported from there are here too, for code that
still imports them from tests.conftest."""
import http.server
import os
import threading

import pytest

from tests.helpers import ROOT, TINY_PARAMS, FileHandler, make_user_dirs, merge, write_params  # noqa: F401

# Models load from disk only; nothing in the tests may reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def one_thread():
    """Tiny models: one torch thread is fastest, and two threads on a busy 2-core machine can be
    many times slower than one. Modules opt in with `pytestmark = usefixtures("one_thread")`."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_project(tmp_path, monkeypatch):
    """A working directory with a tiny params.yaml whose data stages have run for mosi."""
    from pipeline.settings import load_config
    from pipeline.stages import align, download, embed

    monkeypatch.chdir(tmp_path)

    def make(overrides=None, datasets=("mosi",)):
        write_params(tmp_path / "params.yaml", overrides)
        cfg = load_config(tmp_path / "params.yaml")
        for ds in datasets:
            download(cfg, ds)
            align(cfg, ds)
            embed(cfg, ds)
        return cfg

    return make


@pytest.fixture
def serve(tmp_path):
    """serve(**flags) -> (base_url, handler class); every server is shut down at teardown."""
    root = tmp_path / "srv"
    root.mkdir()
    running = []

    def start(**flags):
        handler = type("Handler", (FileHandler,), {"root": root, "requests": [], **flags})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        running.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}", handler

    start.root = root
    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
