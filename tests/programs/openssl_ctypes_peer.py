"""A TLS echo client or server on an OpenSSL shared library named by path
(the OpenSSL 1.1.1 a psycopg2-binary wheel bundles), called through ctypes,
so the test controls every byte. Python's own `ssl` module is not imported.

    openssl_ctypes_peer.py LIBCRYPTO LIBSSL server PORT CERT KEY COUNT
    openssl_ctypes_peer.py LIBCRYPTO LIBSSL client PORT SIZE

Both print "loaded" once the library is mapped and wait for a line on stdin
before going on (the test first sees the sensor probe the library). The
server then prints "listening", serves COUNT connections one after another:
each starts with a line "N\\n", whose N following bytes are echoed back as
they are read. The client sends "SIZE\\n" and SIZE pattern bytes ("req" +
"0123456789" repeated), reads the echo, checks it, prints its local port,
and closes once the server has.
"""

import ctypes
import socket
import sys


def load(libcrypto, libssl):
    # The wheel's libssl names its libcrypto by the hashed file name, which
    # is found once that file is loaded (there is no RUNPATH).
    ctypes.CDLL(libcrypto, mode=ctypes.RTLD_GLOBAL)
    ssl = ctypes.CDLL(libssl)
    for name in ("TLS_client_method", "TLS_server_method"):
        getattr(ssl, name).restype = ctypes.c_void_p
    ssl.SSL_CTX_new.restype = ctypes.c_void_p
    ssl.SSL_CTX_new.argtypes = [ctypes.c_void_p]
    ssl.SSL_new.restype = ctypes.c_void_p
    ssl.SSL_new.argtypes = [ctypes.c_void_p]
    for name in ("SSL_set_fd", "SSL_connect", "SSL_accept", "SSL_shutdown", "SSL_free"):
        getattr(ssl, name).argtypes = [ctypes.c_void_p] + ([ctypes.c_int] if name == "SSL_set_fd" else [])
    ssl.SSL_CTX_use_certificate_file.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    ssl.SSL_CTX_use_PrivateKey_file.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    ssl.SSL_write.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    ssl.SSL_read.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    return ssl


def write_all(ssl, s, data):
    view = memoryview(data)
    while view:
        chunk = bytes(view[: 1 << 16])
        n = ssl.SSL_write(s, chunk, len(chunk))
        if n <= 0:
            sys.exit(f"SSL_write: {n}")
        view = view[n:]


def read(ssl, s, buf, want):
    n = ssl.SSL_read(s, buf, min(want, len(buf)))
    if n <= 0:
        sys.exit(f"SSL_read: {n}")
    return buf.raw[:n]


def server(ssl, port, cert, key, count):
    ctx = ssl.SSL_CTX_new(ssl.TLS_server_method())
    if ssl.SSL_CTX_use_certificate_file(ctx, cert.encode(), 1) != 1:
        sys.exit("certificate")
    if ssl.SSL_CTX_use_PrivateKey_file(ctx, key.encode(), 1) != 1:
        sys.exit("key")
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(8)
    print("listening", flush=True)
    buf = ctypes.create_string_buffer(1 << 16)
    for _ in range(count):
        conn, _ = listener.accept()
        s = ssl.SSL_new(ctx)
        ssl.SSL_set_fd(s, conn.fileno())
        if ssl.SSL_accept(s) != 1:
            sys.exit("SSL_accept")
        line = b""
        while not line.endswith(b"\n"):
            line += read(ssl, s, buf, 1)
        left = int(line)
        while left:
            data = read(ssl, s, buf, left)
            write_all(ssl, s, data)
            left -= len(data)
        ssl.SSL_shutdown(s)
        ssl.SSL_free(s)
        conn.close()


def client(ssl, port, size):
    ctx = ssl.SSL_CTX_new(ssl.TLS_client_method())
    sock = socket.create_connection(("127.0.0.1", port))
    s = ssl.SSL_new(ctx)
    ssl.SSL_set_fd(s, sock.fileno())
    if ssl.SSL_connect(s) != 1:
        sys.exit("SSL_connect")
    body = (b"req0123456789" * (size // 13 + 1))[:size]
    write_all(ssl, s, b"%d\n" % size + body)
    buf = ctypes.create_string_buffer(1 << 16)
    got = b""
    while len(got) < size:
        got += read(ssl, s, buf, size - len(got))
    if got != body:
        sys.exit(f"echo differs ({len(got)} of {size} bytes)")
    print(sock.getsockname()[1], flush=True)
    # Closed only after the server has: closing with its session tickets
    # unread would reset the connection under the server's reads.
    while ssl.SSL_read(s, buf, len(buf)) > 0:
        pass
    ssl.SSL_free(s)
    sock.close()


def main():
    libcrypto, libssl, role, port = sys.argv[1:5]
    ssl = load(libcrypto, libssl)
    print("loaded", flush=True)
    sys.stdin.readline()
    if role == "server":
        cert, key, count = sys.argv[5:8]
        server(ssl, int(port), cert, key, int(count))
    else:
        client(ssl, int(port), int(sys.argv[5]))


if __name__ == "__main__":
    main()
