"""The load generator's raw HTTP/1.1 client, against a real edge-runner server and a hand-framed peer."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import numpy as np

from edge_runner.cli.loadgen import RawConnection, build_infer_body, prepare_request, run_load


def test_run_load_counts_answers_against_a_real_server(start_server: Callable[..., object]) -> None:
    server = start_server("--models", "digits")
    url = server.url  # type: ignore[attr-defined]
    body, headers = build_infer_body({"input": np.zeros((1, 1, 8, 8), np.float32)}, {"input": "FP32"})
    ok = run_load(url, "/v2/models/digits/infer", body, headers, 4, 40)
    assert ok["completed"] == 40 and ok["errors"] == 0
    missing = run_load(url, "/v2/models/no-such-model/infer", body, headers, 2, 10)
    assert missing["completed"] == 0 and missing["errors"] == 10  # 404s are failures; the connection lives on


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length"))
    while len(rest) < length:
        rest += conn.recv(65536)
    return head + b"\r\n\r\n" + rest


def _peer(answers: list[bytes]) -> tuple[int, threading.Thread, list[bytes]]:
    """A socket server that answers each request with the next of ``answers``, as framed by hand."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        pending = list(answers)
        with listener:
            while pending:
                conn, _ = listener.accept()
                with conn:
                    while pending and (request := _read_request(conn)):
                        seen.append(request)
                        answer = pending.pop(0)
                        conn.sendall(answer)
                        if b"Connection: close" in answer:
                            break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, seen


def test_raw_connection_reads_each_framing_and_reconnects() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        # chunked, with a chunk extension and a trailer
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nend",  # on a new connection
    ]
    port, thread, seen = _peer(answers)
    conn = RawConnection("127.0.0.1", port, prepare_request("127.0.0.1", port, "/x", b"payload", {"A": "b"}))
    results = [conn() for _ in answers]
    conn.close()
    thread.join(10)
    assert results == [True, True, False, True, True]
    assert len(seen) == 5
    for request in seen:
        head, _, body = request.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /x HTTP/1.1" and body == b"payload"
        assert f"Host: 127.0.0.1:{port}".encode() in lines and b"Content-Length: 7" in lines and b"A: b" in lines


def test_a_server_that_hangs_up_is_a_failure_not_a_hang() -> None:
    port, thread, _ = _peer([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"])  # then closes
    conn = RawConnection("127.0.0.1", port, prepare_request("127.0.0.1", port, "/x", b"payload", {}), timeout_s=10)
    assert conn() is False
    thread.join(10)
