#!/usr/bin/env python3
"""Real gRPC peers (grpcio, HTTP/2 in gRPC's C core) with a generic handler,
so no generated code: messages are raw bytes.

  grpc_peer.py server PORT READY_FILE
  grpc_peer.py client PORT
  grpc_peer.py late-client PORT READY_FILE GO_FILE
  grpc_peer.py tls-server PORT READY_FILE CERT KEY
  grpc_peer.py tls-client PORT CA NONCE
  grpc_peer.py tls-clients PORT CA NONCE N
  grpc_peer.py tls-timed PORT CA N
  grpc_peer.py tls-late-client PORT CA NONCE READY_FILE GO_FILE
  grpc_peer.py tls-sizes PORT CA NONCE SIZE[,SIZE…]

Over TLS (gRPC's own BoringSSL, statically linked into cygrpc) the client
calls Say with b"ping:" + NONCE and then with NONCE + 64 KiB of b"x" (the
message gRPC splits into several TLS records), and checks both answers.
tls-clients opens N channels at once (each its own connection, the calls
in N threads) and calls Say on channel i with NONCE + "-" + i, 3 times.
tls-sizes calls Say once per size on one channel with a message of exactly
that many bytes (NONCE, then a pattern); server and client take up to 8 MiB.
tls-late-client makes one call over TLS, then (after GO_FILE appears) calls
Say with NONCE + "-" + i for i in 0..4 on the same connection.

The service nettap.test.Echo has Say (answers b"pong:" + the request) and
Fail (aborts with NOT_FOUND "no such thing"). The client calls Say twice
and Fail once on one channel and checks the answers.
"""
import os
import sys
import time
from concurrent import futures

import grpc


def say(request, context):
    return b"pong:" + request


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def server(port: int, ready: str) -> None:
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handlers = {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    }
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("nettap.test.Echo", handlers),))
    srv.add_insecure_port(f"127.0.0.1:{port}")
    srv.start()
    open(ready, "w").close()
    srv.wait_for_termination()


# gRPC's default limit is 4 MiB per received message; the answer to a
# 4 MiB request is 5 bytes more.
BIG = [("grpc.max_receive_message_length", 8 << 20), ("grpc.max_send_message_length", 8 << 20)]


def sized(nonce: str, n: int) -> bytes:
    unit = (nonce + ":0123456789abcdef").encode()
    return (unit * (n // len(unit) + 1))[:n]


def tls_server(port: int, ready: str, cert: str, key: str) -> None:
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=BIG)
    handlers = {"Say": grpc.unary_unary_rpc_method_handler(say)}
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("nettap.test.Echo", handlers),))
    with open(cert, "rb") as c, open(key, "rb") as k:
        creds = grpc.ssl_server_credentials([(k.read(), c.read())])
    srv.add_secure_port(f"127.0.0.1:{port}", creds)
    srv.start()
    open(ready, "w").close()
    srv.wait_for_termination()


def trusting(ca: str) -> grpc.ChannelCredentials:
    """Channel credentials that trust the test CA in file `ca`."""
    with open(ca, "rb") as f:
        return grpc.ssl_channel_credentials(root_certificates=f.read())


def wait_for(go: str) -> None:
    """Until file `go` appears (30 s at most: then the peer fails)."""
    deadline = time.monotonic() + 30
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise SystemExit("no go file within 30 s")
        time.sleep(0.02)


def tls_client(port: int, ca: str, nonce: str) -> None:
    creds = trusting(ca)
    with grpc.secure_channel(f"localhost:{port}", creds) as ch:
        say_rpc = ch.unary_unary("/nettap.test.Echo/Say")
        small = b"ping:" + nonce.encode()
        assert say_rpc(small, timeout=10) == b"pong:" + small
        big = nonce.encode() + b"x" * 65536
        assert say_rpc(big, timeout=10) == b"pong:" + big


def tls_clients(port: int, ca: str, nonce: str, n: int) -> None:
    creds = trusting(ca)
    # A distinct option per channel: gRPC would otherwise share one
    # subchannel (one connection) between equal channels.
    channels = [
        grpc.secure_channel(f"localhost:{port}", creds, options=[("nettap.test.channel", i)]) for i in range(n)
    ]

    def run(i: int) -> None:
        say_rpc = channels[i].unary_unary("/nettap.test.Echo/Say")
        msg = f"{nonce}-{i}".encode()
        for _ in range(3):
            assert say_rpc(msg, timeout=20) == b"pong:" + msg

    with futures.ThreadPoolExecutor(max_workers=n) as pool:
        for f in [pool.submit(run, i) for i in range(n)]:
            f.result()
    for ch in channels:
        ch.close()


def tls_sizes(port: int, ca: str, nonce: str, sizes: str) -> None:
    creds = trusting(ca)
    with grpc.secure_channel(f"localhost:{port}", creds, options=BIG) as ch:
        say_rpc = ch.unary_unary("/nettap.test.Echo/Say")
        for n in map(int, sizes.split(",")):
            msg = sized(nonce, n)
            assert say_rpc(msg, timeout=30) == b"pong:" + msg


def tls_late_client(port: int, ca: str, nonce: str, ready: str, go: str) -> None:
    creds = trusting(ca)
    with grpc.secure_channel(f"localhost:{port}", creds) as ch:
        say_rpc = ch.unary_unary("/nettap.test.Echo/Say")
        assert say_rpc(b"before", timeout=10) == b"pong:before"
        open(ready, "w").close()
        wait_for(go)
        for i in range(4):
            msg = f"{nonce}-{i}".encode()
            assert say_rpc(msg, timeout=10) == b"pong:" + msg


def tls_timed(port: int, ca: str, n: int) -> None:
    """N sequential calls of 100 bytes on one TLS channel (after one to
    connect); prints the seconds they took (the per-call probe cost)."""
    creds = trusting(ca)
    with grpc.secure_channel(f"localhost:{port}", creds) as ch:
        say_rpc = ch.unary_unary("/nettap.test.Echo/Say")
        msg = b"t" * 100
        say_rpc(msg, timeout=10)
        start = time.monotonic()
        for _ in range(n):
            assert say_rpc(msg, timeout=10) == b"pong:" + msg
        print(f"{n} calls in {time.monotonic() - start:.3f} s")


def calls(ch) -> None:
    say_rpc = ch.unary_unary("/nettap.test.Echo/Say")
    assert say_rpc(b"ping-1", timeout=10) == b"pong:ping-1"
    assert say_rpc(b"ping-2", timeout=10) == b"pong:ping-2"
    try:
        ch.unary_unary("/nettap.test.Echo/Fail")(b"x", timeout=10)
        raise SystemExit("Fail succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND and e.details() == "no such thing", e


def late_client(port: int, ready: str, go: str) -> None:
    """One call on a channel, then (after GO_FILE appears, within 30 s) the
    calls of `client` on the same connection: a capture started in between
    joins the connection mid-stream, with both HPACK tables already in use."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        assert ch.unary_unary("/nettap.test.Echo/Say")(b"ping-0", timeout=10) == b"pong:ping-0"
        open(ready, "w").close()
        wait_for(go)
        calls(ch)


def client(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        calls(ch)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1] == "late-client":
        late_client(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "tls-server":
        tls_server(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    elif sys.argv[1] == "tls-clients":
        tls_clients(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif sys.argv[1] == "tls-sizes":
        tls_sizes(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    elif sys.argv[1] == "tls-late-client":
        tls_late_client(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
    elif sys.argv[1] == "tls-timed":
        tls_timed(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == "tls-client":
        tls_client(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        client(int(sys.argv[2]))
