"""``read_body`` behind a real waitress server on loopback: every way waitress can hand a body over (buffered in
memory, spilled to a temporary file, sent chunked) gives the bytes sent, and the limit holds on each."""

from __future__ import annotations

import hashlib
import http.client
import threading
from collections.abc import Iterator

import falcon
import pytest
import waitress

from edge_runner.core.errors import PayloadTooLarge
from edge_runner.server.body import read_body

LIMIT = 4 * 2**20
#: waitress keeps bodies up to this size in memory and spills larger ones to a temporary file
IN_MEMORY = 256 * 2**10


class Echo:
    """Answers the length and SHA-256 of the body read_body returned, or 413."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            data = read_body(req, LIMIT)
        except PayloadTooLarge as exc:
            resp.status = falcon.HTTP_413
            resp.text = exc.message
            return
        assert isinstance(data, bytes)
        resp.text = f"{len(data)} {hashlib.sha256(data).hexdigest()}"


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    app = falcon.App()
    app.add_route("/echo", Echo())
    server = waitress.create_server(
        app, host="127.0.0.1", port=0, inbuf_overflow=IN_MEMORY, recv_bytes=4 * 2**20, max_request_body_size=2**30
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield int(server.effective_port)
    server.close()


def post(port: int, body: bytes, chunked: bool = False) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        if chunked:
            pieces = (body[i : i + 100_000] for i in range(0, len(body), 100_000))
            conn.request("POST", "/echo", body=pieces, encode_chunked=True)
        else:
            conn.request("POST", "/echo", body=body)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def expected(body: bytes) -> str:
    return f"{len(body)} {hashlib.sha256(body).hexdigest()}"


@pytest.mark.parametrize(
    "size",
    [1, 5_000, 9_000, IN_MEMORY - 1, 3 * 2**20, LIMIT],
    ids=["1 B", "5 KB (waitress's small buffer)", "9 KB", "just in memory", "3 MiB spilled to a file", "at limit"],
)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_body_read_is_the_body_sent(port: int, size: int, chunked: bool) -> None:
    body = bytes((i * 7 + size) % 251 for i in range(size))
    assert post(port, body, chunked) == (200, expected(body))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_past_the_limit_is_refused(port: int, chunked: bool) -> None:
    status, text = post(port, b"x" * (LIMIT + 1), chunked)
    assert status == 413
    assert "exceeds the" in text and "--max-body-bytes" in text


def test_pipelined_requests_each_read_their_own_body(port: int) -> None:
    """Two requests on one connection: the second body is not the first one's buffer."""
    first, second = b"a" * 300_000, b"b" * 20_000
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for body in (first, second):
            conn.request("POST", "/echo", body=body)
            resp = conn.getresponse()
            assert (resp.status, resp.read().decode()) == (200, expected(body))
    finally:
        conn.close()
