#!/usr/bin/env python3
"""Test peer for nettap's end-to-end tests: a TCP server and client that
exchange exact payloads over one keep-alive connection.

Each message is one payload of a size from --sizes; the client sends its
payload, the server reads exactly that many bytes and answers with its own
payload of the same size, the client reads it; then the next size. The bytes
are random from --seed, so the test knows them: with --dump DIR each side
writes what it sent and received to DIR/{role}.sent and DIR/{role}.recv.

  exchange.py server --listen ADDR --port P --sizes 1,100 --seed S --dump DIR [--ready FILE]
  exchange.py client --connect ADDR --port P --sizes 1,100 --seed S --dump DIR
  exchange.py hold ... --hold-at N --hold-file F
                         like client, but before message N creates F.waiting and waits for F
"""
import argparse
import json
import os
import random
import socket
import ssl
import sys
import time


def payload(seed: str, who: str, index: int, size: int) -> bytes:
    rng = random.Random(f"{seed}/{who}/{index}")
    return rng.randbytes(size)


def split3(b) -> list:
    """Three iovecs of uneven sizes (one may be empty), to exercise the kernel's iovec walk."""
    k = len(b) // 3
    return [b[:k], b[k:k + 7], b[k + 7:]]


def send_all(sock: socket.socket, data: bytes, io: str) -> None:
    """Send with the syscall family `io` names, handling partial writes."""
    view = memoryview(data)
    while view:
        if io in ("send", "peek"):
            n = sock.send(view)            # sendto(2)
        elif io == "write":
            n = os.write(sock.fileno(), view)
        elif io == "vec":
            n = os.writev(sock.fileno(), split3(view))
        elif io == "msg":
            n = sock.sendmsg(split3(view))
        else:
            raise ValueError(io)
        view = view[n:]


def recv_some(sock: socket.socket, n: int, io: str) -> bytes:
    n = min(n, 1 << 20)
    if io == "send":
        return sock.recv(n)                # recvfrom(2)
    if io == "peek":
        sock.recv(n, socket.MSG_PEEK)      # looked at, left queued: read again below
        return sock.recv(n)
    if io == "write":
        return os.read(sock.fileno(), n)
    bufs = [bytearray(max(1, n // 3)), bytearray(5), bytearray(n)]
    if io == "vec":
        got = os.readv(sock.fileno(), bufs)
    else:
        got = sock.recvmsg_into(bufs)[0]
    return bytes(b"".join(bufs)[:got])


def recv_exact(sock: socket.socket, n: int, io: str = "send") -> bytes:
    chunks = []
    while n:
        b = recv_some(sock, n, io)
        if not b:
            raise EOFError("peer closed early")
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def wait_for(path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.02)


def endpoint(addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def write_info(args, who: str, conn: socket.socket) -> None:
    """pid, comm and the socket's endpoints, for the test to check records against."""
    if not args.dump:
        return
    with open(f"/proc/{os.getpid()}/comm") as f:
        comm = f.read().strip()
    info = {"pid": os.getpid(), "comm": comm, "local": endpoint(conn.getsockname()),
            "remote": endpoint(conn.getpeername())}
    dump_atomically(os.path.join(args.dump, f"{who}.info"), json.dumps(info).encode())


def blocking_for_raw_fd_io(conn: socket.socket, args) -> None:
    """A socket timeout makes the fd non-blocking, which os.read/os.readv do not
    retry; raw-fd modes use a blocking fd (the test bounds the run time)."""
    conn.settimeout(None if args.io in ("write", "vec") else args.timeout)


def run(args) -> None:
    sizes = [int(s) for s in args.sizes.split(",") if s]
    family = socket.AF_INET6 if ":" in (args.listen or args.connect) else socket.AF_INET
    sent, recvd = bytearray(), bytearray()
    if args.mode == "server":
        srv = socket.socket(family, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((args.listen, args.port))
        srv.listen(1)
        if args.ready:
            open(args.ready, "w").close()
        srv.settimeout(args.timeout)
        conn, _ = srv.accept()
        if args.tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(args.tls_cert, args.tls_key)
            conn = ctx.wrap_socket(conn, server_side=True)
        blocking_for_raw_fd_io(conn, args)
        write_info(args, "server", conn)
        for i, n in enumerate(sizes):
            recvd += recv_exact(conn, n, args.io)
            out = payload(args.seed, "server", i, n)
            if args.sendfile:
                with open(os.path.join(args.dump, "sendfile.tmp"), "w+b") as f:
                    f.write(out)
                    f.flush()
                    off = 0
                    while off < n:
                        off += os.sendfile(conn.fileno(), f.fileno(), off, n - off)
            else:
                send_all(conn, out, args.io)
            sent += out
        # Wait for the client's close so both sides' last bytes are read.
        try:
            conn.recv(1)
        except (ssl.SSLError, OSError):
            pass  # a TLS peer may close without close_notify
        conn.close()
        if args.exit_file:
            # Still listening until the test has seen what it waits for.
            wait_for(args.exit_file, args.timeout)
        srv.close()
    else:
        conn = socket.create_connection((args.connect, args.port), timeout=args.timeout)
        if args.tls:
            ctx = ssl.create_default_context(cafile=args.tls)
            ctx.check_hostname = False
            conn = ctx.wrap_socket(conn, server_hostname="localhost")
        blocking_for_raw_fd_io(conn, args)
        write_info(args, "client", conn)
        for i, n in enumerate(sizes):
            if args.mode == "hold" and i == args.hold_at:
                open(args.hold_file + ".waiting", "w").close()
                wait_for(args.hold_file, args.timeout)
            out = payload(args.seed, "client", i, n)
            send_all(conn, out, args.io)
            sent += out
            recvd += recv_exact(conn, n, args.io)
        conn.close()
    who = "server" if args.mode == "server" else "client"
    if args.dump:
        # .sent last: tests wait for it, then read .recv and .info.
        dump_atomically(os.path.join(args.dump, f"{who}.recv"), recvd)
        dump_atomically(os.path.join(args.dump, f"{who}.sent"), sent)


def dump_atomically(path: str, data: bytes) -> None:
    """Whole or absent, never half-written, for a test polling for the file."""
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["server", "client", "hold"])
    p.add_argument("--listen")
    p.add_argument("--connect")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sizes", required=True)
    p.add_argument("--seed", default="nettap")
    p.add_argument("--dump")
    p.add_argument("--ready")
    p.add_argument("--hold-at", type=int, default=1)
    p.add_argument("--hold-file")
    p.add_argument("--exit-file", help="server: keep listening until this file exists")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--io", choices=["send", "write", "vec", "msg", "peek"], default="send",
                   help="syscalls: send/recv, write/read, writev/readv, sendmsg/recvmsg, "
                        "send/recv with a recv(MSG_PEEK) before each recv")
    p.add_argument("--sendfile", action="store_true", help="server answers with sendfile(2)")
    p.add_argument("--tls-cert", help="server: TLS with this certificate (and --tls-key)")
    p.add_argument("--tls-key")
    p.add_argument("--tls", metavar="CAFILE", help="client: TLS, trusting this certificate")
    args = p.parse_args()
    if args.mode == "server" and not args.listen:
        p.error("server needs --listen")
    if args.mode != "server" and not args.connect:
        p.error("client needs --connect")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
