"""The HTTP side of the simulator: routing, body reading, faults on the wire."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import socketserver
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from simulator.faults import Fault
from simulator.messages import COUNT_TOKENS_PATH, MESSAGES_PATH, SSE
from simulator.replies import Reply, StreamReply, error_reply

if TYPE_CHECKING:
    from simulator.accounts import SimAccount
    from simulator.provider import SimulatedAnthropic

TOKEN_PATH = "/v1/oauth/token"
USAGE_PATH = "/api/oauth/usage"
PROFILE_PATH = "/api/oauth/profile"
AUTHORIZE_PATH = "/oauth/authorize"
MESSAGES_ENDPOINTS = {MESSAGES_PATH: "messages", COUNT_TOKENS_PATH: "count_tokens"}

_DRIP_CHUNKS = 20
_LINGER_RESET = struct.pack("ii", 1, 0)


class SimServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its simulator and its open connections."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], sim: SimulatedAnthropic) -> None:
        self.sim = sim
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._to_reset: set[socket.socket] = set()
        super().__init__(address, SimHandler)

    def server_bind(self) -> None:
        """Bind without the reverse DNS lookup HTTPServer does for `server_name`."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, conn: socket.socket) -> None:
        with self._conn_lock:
            self._connections.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._conn_lock:
            self._connections.discard(conn)

    def mark_reset(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        with self._conn_lock:
            self._to_reset.add(conn)

    def close_connections(self) -> None:
        """Wake every handler thread blocked on an idle keep-alive connection."""
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            reset = request in self._to_reset
            self._to_reset.discard(request)
        if reset:
            request.close()  # SO_LINGER 0: the close sends RST, not FIN
        else:
            super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts, resets) are normal here: stay quiet about them."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class SimHandler(BaseHTTPRequestHandler):
    """One connection; HTTP/1.1 keep-alive, every answer with Content-Length."""

    protocol_version = "HTTP/1.1"
    server_version = "SimulatedAnthropic/1.0"
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections close after this

    @property
    def sim(self) -> SimulatedAnthropic:
        server = self.server
        assert isinstance(server, SimServer)
        return server.sim

    def setup(self) -> None:
        super().setup()
        assert isinstance(self.server, SimServer)
        self.server.track(self.connection)

    def finish(self) -> None:
        assert isinstance(self.server, SimServer)
        self.server.untrack(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence request logging."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self, method: str) -> None:
        sim = self.sim
        url = urlsplit(self.path)
        raw = self._read_body()
        sim.pause(sim.latency)
        account: SimAccount | None = None
        payload: dict[str, Any] | None = None
        query: dict[str, list[str]] = {}
        if method == "POST" and url.path in MESSAGES_ENDPOINTS:
            self._serve_messages(MESSAGES_ENDPOINTS[url.path], url.path, url.query, raw)
            return
        if (method, url.path) == ("POST", TOKEN_PATH):
            endpoint = "token"
            payload = _parse_token_body(raw, self.headers.get("Content-Type", ""))
            grant = payload.get("grant_type") if payload else None
            stat = "exchange" if grant == "authorization_code" else "token"
            if payload and stat == "token":
                account = sim.owner_of_refresh_token(payload.get("refresh_token"))
        elif (method, url.path) in (("GET", USAGE_PATH), ("GET", PROFILE_PATH)):
            endpoint = stat = "usage" if url.path == USAGE_PATH else "profile"
            account = sim.owner_of_access_token(_bearer(self.headers.get("Authorization", "")))
        elif (method, url.path) == ("GET", AUTHORIZE_PATH):
            endpoint = stat = "authorize"
            query = parse_qs(url.query)
        else:
            self._send(error_reply(404, "not_found_error", f"No route for {method} {url.path}"))
            return
        sim.count(stat)
        fault = sim.take_fault(endpoint, account)
        if fault is not None and not fault.answers_normally:
            self._serve_fault(fault)
            return
        if fault is not None and fault.kind == "delay":
            sim.pause(fault.seconds)
        if endpoint == "token":
            reply = sim.token_reply(payload)
        elif endpoint == "authorize":
            reply = sim.authorize_reply(query)
        else:
            bearer = _bearer(self.headers.get("Authorization", ""))
            reply = sim.resource_reply(endpoint, bearer)
        drip = fault.seconds if fault is not None and fault.kind == "slow_body" else 0.0
        self._send(reply, drip=drip)

    def _serve_fault(self, fault: Fault) -> None:
        if fault.kind == "reset":
            assert isinstance(self.server, SimServer)
            self.server.mark_reset(self.connection)
            self.close_connection = True
            return
        extra: tuple[tuple[str, str], ...] = fault.headers
        if fault.kind == "timeout":
            self.sim.pause(fault.seconds)
            extra = (*extra, ("Connection", "close"))
        self._send(Reply(fault.code, fault.body, fault.content_type, extra))

    def _serve_messages(self, endpoint: str, path: str, query: str, raw: bytes) -> None:
        """A Messages API request: recorded, faults applied, answered as JSON or a stream; a
        client that hangs up before the answer is complete is noted on the record."""
        sim = self.sim
        headers = {name.lower(): value for name, value in self.headers.items()}
        record = sim.record_messages_request(path=path, query=query, headers=headers, body=raw)
        account = sim.owner_of_access_token(_bearer(headers.get("authorization", "")))
        sim.count(endpoint)
        fault = sim.take_fault(endpoint, account)
        try:
            status, sent, hung_up = self._answer_messages(endpoint, headers, raw, account, fault)
        except (BrokenPipeError, ConnectionResetError):
            status, sent, hung_up = 0, 0, True
        if hung_up:
            self.close_connection = True
        sim.finish_messages_request(
            record, account=account, status=status, events_sent=sent, disconnected=hung_up
        )

    def _answer_messages(
        self,
        endpoint: str,
        headers: dict[str, str],
        raw: bytes,
        account: SimAccount | None,
        fault: Fault | None,
    ) -> tuple[int, int, bool]:
        """Send the answer (or the fault); returns (status, events sent, client hung up)."""
        sim = self.sim
        kind = fault.kind if fault is not None else None
        if fault is not None and kind == "delay" and self._hold(fault.seconds):
            return 0, 0, True
        if fault is not None and kind == "stream_error":
            return self._send_stream(sim.stream_error_reply(fault, account))
        if fault is not None and kind == "status":
            limits = sim.messages_headers(account)
            self._send(Reply(fault.code, fault.body, fault.content_type, fault.headers + limits))
            return fault.code, 0, False
        if fault is not None and not fault.answers_normally:
            self._serve_fault(fault)
            return (0 if kind == "reset" else fault.code), 0, False
        reply = sim.messages_reply(
            endpoint,
            bearer=_bearer(headers.get("authorization", "")),
            api_key=headers.get("x-api-key"),
            beta=headers.get("anthropic-beta", ""),
            raw=raw,
        )
        cut = fault.after_events if fault is not None and kind == "stream_cut" else None
        if isinstance(reply, StreamReply):
            return self._send_stream(reply, cut=cut)
        drip = fault.seconds if fault is not None and kind == "slow_body" else 0.0
        self._send(reply, drip=drip, cut=cut is not None)
        return reply.code, 0, False

    def _hold(self, seconds: float) -> bool:
        """Wait `seconds` (less if the simulator stops); True as soon as the client hangs up."""
        sim = self.sim
        deadline = time.monotonic() + seconds
        while not sim.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if readable and self._hung_up():
                return True
            if readable:  # the client sent more (a pipelined request): just wait
                sim.pause(deadline - time.monotonic())
        return False

    def _hung_up(self) -> bool:
        try:
            peeked: bytes = self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return peeked == b""

    def _send_stream(self, reply: StreamReply, cut: int | None = None) -> tuple[int, int, bool]:
        """Send a 200 event stream, chunked, each event after its delay. Returns (status, events
        sent, client hung up). `cut`: close the connection after that many events."""
        self.send_response(200)
        self.send_header("Content-Type", SSE)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()
        sent = 0
        try:
            for event, delay in zip(reply.events, reply.delays, strict=True):
                if cut is not None and sent >= cut:
                    self.close_connection = True
                    return 200, sent, False
                if delay > 0 and self._hold(delay):
                    return 200, sent, True
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                sent += 1
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return 200, sent, True
        return 200, sent, False

    def _send(self, reply: Reply, drip: float = 0.0, cut: bool = False) -> None:
        self.send_response(reply.code)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        names = set()
        for name, value in reply.headers:
            names.add(name.lower())
            self.send_header(name, value)
        if self.close_connection and "connection" not in names:
            self.send_header("Connection", "close")
        self.end_headers()
        if cut:  # half the body, then the connection closes
            self.wfile.write(reply.body[: len(reply.body) // 2])
            self.close_connection = True
            return
        if drip <= 0 or not reply.body:
            self.wfile.write(reply.body)
            return
        self.wfile.flush()
        body = reply.body
        pieces = min(_DRIP_CHUNKS, len(body))
        step = -(-len(body) // pieces)
        chunks = [body[i : i + step] for i in range(0, len(body), step)]
        for chunk in chunks:
            self.sim.pause(drip / len(chunks))
            self.wfile.write(chunk)


def _bearer(header: str) -> str | None:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _parse_token_body(raw: bytes, content_type: str) -> dict[str, Any] | None:
    """The token endpoint takes JSON; form-encoded bodies are accepted too."""
    if "x-www-form-urlencoded" in content_type:
        form = parse_qs(raw.decode("utf-8", "replace"))
        return {key: values[0] for key, values in form.items()}
    try:
        data = json.loads(raw or b"null")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
