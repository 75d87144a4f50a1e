#!/usr/bin/env python3
"""HTTP/1.1 peers for nettap's protocol tests: a keep-alive server with
endpoints that exercise each framing, and a client that drives them over one
connection, then pipelines two requests and upgrades a third connection.

  http_peer.py server --port P --ready FILE
  http_peer.py client --port P
  http_peer.py keepalive --port P --tls CERT [--count N]   (HTTPS server: --tls-cert/--tls-key)
"""
import argparse
import gzip
import http.client
import http.server
import json
import socket
import ssl
import sys

GZIP_TEXT = b"hello gzip " * 100
CHUNKS = [b"first,", b"second,", b"third"]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue handling

    def log_message(self, *args):
        pass

    def body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def send(self, status: int, body: bytes, extra=()):
        self.send_response(status)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.send(200, b"x" * 1234)

    def do_GET(self):
        if self.path == "/gzip":
            self.send(200, gzip.compress(GZIP_TEXT), [("Content-Encoding", "gzip"), ("Content-Type", "text/plain")])
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for c in CHUNKS:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/upgrade":
            self.send_response(101)
            self.send_header("Upgrade", "nettap-test")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            self.wfile.write(b"RAW-FROM-SERVER")
            self.wfile.flush()
            self.rfile.read(len(b"RAW-FROM-CLIENT"))
            self.close_connection = True
        else:
            self.send(200, json.dumps({"path": self.path}).encode(), [("Content-Type", "application/json")])

    def do_POST(self):
        data = self.body()
        if self.path.startswith("/login"):
            # A session token in JSON and a cookie, as login endpoints answer.
            body = json.dumps({"ok": True, "token": "SECRET-SERVER-TOKEN-77"}).encode()
            cookie = "session=SECRET-SERVER-COOKIE-88; Path=/; HttpOnly"
            self.send(200, body, [("Content-Type", "application/json"), ("Set-Cookie", cookie)])
            return
        self.send(201, b"got " + str(len(data)).encode() + b": " + data, [("Content-Type", "text/plain")])


class DualStackServer(http.server.ThreadingHTTPServer):
    """Listens on "::" for IPv6 and IPv4 alike."""

    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def server(args) -> None:
    if args.listen == "::":
        srv = DualStackServer(("::", args.port), Handler)
    else:
        srv = http.server.ThreadingHTTPServer((args.listen, args.port), Handler)
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    open(args.ready, "w").close()
    srv.serve_forever()


def keepalive(args) -> None:
    """N requests over one TLS keep-alive connection, each checked."""
    ctx = ssl.create_default_context(cafile=args.tls)
    ctx.check_hostname = False
    c = http.client.HTTPSConnection("127.0.0.1", args.port, timeout=30, context=ctx)
    for i in range(args.count):
        c.request("GET", f"/k{i}")
        assert c.getresponse().read() == json.dumps({"path": f"/k{i}"}).encode()
    c.close()


def client(args) -> None:
    c = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
    c.request("GET", "/gzip", headers={"Accept-Encoding": "gzip"})
    r = c.getresponse()
    assert gzip.decompress(r.read()) == GZIP_TEXT
    c.request("POST", "/echo?mode=chunked", body=iter(CHUNKS), encode_chunked=True)
    assert c.getresponse().read() == b"got 18: first,second,third"
    c.request("HEAD", "/head")
    assert c.getresponse().read() == b""
    c.request("GET", "/chunked")
    assert c.getresponse().read() == b"".join(CHUNKS)
    c.request("POST", "/echo", body=b"with expect", headers={"Expect": "100-continue"})
    assert c.getresponse().read() == b"got 11: with expect"
    c.close()

    # Two requests in one write, answered in order.
    s = socket.create_connection(("127.0.0.1", args.port), timeout=30)
    s.sendall(b"GET /p1 HTTP/1.1\r\nHost: pipe\r\n\r\nGET /p2 HTTP/1.1\r\nHost: pipe\r\n\r\n")
    want = b'{"path": "/p2"}'
    got = b""
    while not got.endswith(want):
        got += s.recv(65536)
    s.close()

    # An upgrade: after the 101 both directions are raw bytes.
    s = socket.create_connection(("127.0.0.1", args.port), timeout=30)
    s.sendall(b"GET /upgrade HTTP/1.1\r\nHost: up\r\nUpgrade: nettap-test\r\nConnection: Upgrade\r\n\r\n")
    got = b""
    while not got.endswith(b"RAW-FROM-SERVER"):
        got += s.recv(65536)
    s.sendall(b"RAW-FROM-CLIENT")
    s.recv(1)  # the server closes
    s.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["server", "client", "keepalive"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ready")
    p.add_argument("--listen", default="127.0.0.1", help='server: address ("::" for IPv6 and IPv4)')
    p.add_argument("--tls-cert", help="server: HTTPS with this certificate (and --tls-key)")
    p.add_argument("--tls-key")
    p.add_argument("--tls", metavar="CAFILE", help="keepalive: trust this certificate")
    p.add_argument("--count", type=int, default=200)
    args = p.parse_args()
    {"server": server, "client": client, "keepalive": keepalive}[args.mode](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
