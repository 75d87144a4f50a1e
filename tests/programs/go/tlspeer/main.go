// An HTTPS server and client on Go's own crypto/tls and net/http, the peer
// of nettap's Go TLS tests.
//
//	tlspeer server -addr 127.0.0.1:PORT -cert C -key K -ready FILE [-http1]
//	tlspeer client -url https://127.0.0.1:PORT/path -ca C [-http1] [-n N] [-sizes 0,1024,...] [-wrap] [-hold FILE]
//	tlspeer closeread -addr 127.0.0.1:PORT -cert C -key K
//	tlspeer layout
//
// The server answers `POST /echo/N` with N bytes of pattern("resp", N) after
// checking the request body is pattern("req", len); any other request with
// "go says: " and the request path. The client makes N GET requests over one
// connection, or with -sizes one POST per size, and checks every answer;
// with -hold it first writes FILE.waiting and waits for FILE (the test
// learns its pid meanwhile), and at the end waits for FILE.exit (the test
// reads the sensor's records of it while it still runs).
// closeread is both ends of one TLS 1.3 connection, and a client Read that
// returns plaintext after its connection was closed (see closeRead).
// layout prints, as the running program sees them through reflect and
// unsafe, the offsets nettap reads a tls.Conn's fd with and the type hash in
// the (*net.TCPConn, net.Conn) itab.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tlspeer server|client ...")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "server: listen address")
	cert := fs.String("cert", "", "server: certificate")
	key := fs.String("key", "", "server: key")
	ready := fs.String("ready", "", "server: file created once listening")
	target := fs.String("url", "", "client: URL")
	ca := fs.String("ca", "", "client: trusted certificate")
	fs.BoolVar(&wrapConns, "wrap", false, "client: TLS over a net.Conn wrapping the TCP one")
	n := fs.Int("n", 1, "client: requests")
	sizes := fs.String("sizes", "", "client: POST bodies of these sizes instead of GETs")
	http1 := fs.Bool("http1", false, "HTTP/1.1 only (no HTTP/2)")
	hold := fs.String("hold", "", "client: wait for this file before the first request")
	fs.Parse(os.Args[2:])
	if *hold != "" {
		if err := waitFor(*hold); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	var err error
	switch os.Args[1] {
	case "server":
		err = serve(*addr, *cert, *key, *ready, *http1)
	case "client":
		if *sizes != "" {
			err = post(*target, *ca, *sizes, *http1)
		} else {
			err = get(*target, *ca, *n, *http1)
		}
	case "closeread":
		err = closeRead(*addr, *cert, *key)
	case "layout":
		layout()
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err == nil && *hold != "" {
		err = waitFor(*hold + ".exit")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// waitFor writes file.waiting, then waits (at most five minutes) until file exists.
func waitFor(file string) error {
	if err := os.WriteFile(file+".waiting", nil, 0o644); err != nil {
		return err
	}
	for start := time.Now(); time.Since(start) < 5*time.Minute; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(file); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s did not appear within five minutes", file)
}

func serve(addr, cert, key, ready string, http1 bool) error {
	srv := &http.Server{Addr: addr, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		if strings.HasPrefix(r.URL.Path, "/echo/") && r.Method == http.MethodPost {
			size, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/echo/"))
			if !bytes.Equal(body, pattern("req", len(body))) {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Length", strconv.Itoa(size))
			w.Write(pattern("resp", size))
			return
		}
		fmt.Fprintf(w, "go says: %s%s", r.URL.Path, body)
	})}
	if http1 {
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	if err := os.WriteFile(ready, []byte("ready\n"), 0o644); err != nil {
		return err
	}
	return srv.ListenAndServeTLS(cert, key)
}

// pattern is tag + "0123456789" repeated to n bytes (pattern_body in the tests).
func pattern(tag string, n int) []byte {
	unit := []byte(tag + "0123456789")
	out := make([]byte, n)
	for i := range out {
		out[i] = unit[i%len(unit)]
	}
	return out
}

// wrapConns makes the client's TLS run over a countingConn, as TLS over any
// wrapper net.Conn (metrics, proxies) does.
var wrapConns bool

type countingConn struct {
	net.Conn
	written int
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.written += n
	return n, err
}

func newClient(ca string, http1 bool) (*http.Client, error) {
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}, ForceAttemptHTTP2: !http1}
	if http1 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	if wrapConns {
		var d net.Dialer
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &countingConn{Conn: c}, nil
		}
	}
	return &http.Client{Transport: tr}, nil
}

func post(target, ca, sizes string, http1 bool) error {
	client, err := newClient(ca, http1)
	if err != nil {
		return err
	}
	u, err := url.Parse(target)
	if err != nil {
		return err
	}
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(s)
		if err != nil {
			return err
		}
		resp, err := client.Post(fmt.Sprintf("%s://%s/echo/%d", u.Scheme, u.Host, n), "application/octet-stream", bytes.NewReader(pattern("req", n)))
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(body, pattern("resp", n)) {
			return fmt.Errorf("size %d: status %d, %d bytes", n, resp.StatusCode, len(body))
		}
	}
	return nil
}

func get(target, ca string, n int, http1 bool) error {
	client, err := newClient(ca, http1)
	if err != nil {
		return err
	}
	u, err := url.Parse(target)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		path := fmt.Sprintf("%s%d", u.Path, i)
		resp, err := client.Get(u.Scheme + "://" + u.Host + path)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "go says: " + path; string(body) != want || resp.StatusCode != 200 {
			return fmt.Errorf("got %d %q, want %q", resp.StatusCode, body, want)
		}
	}
	return nil
}

// layout prints "conn_data tcpconn_fd netfd_sysfd itab_hash" (see the package comment).
func layout() {
	field := func(t reflect.Type, name string) reflect.StructField {
		f, ok := t.FieldByName(name)
		if !ok {
			panic(t.String() + " has no " + name)
		}
		return f
	}
	tlsConn := field(reflect.TypeOf(tls.Conn{}), "conn")
	tcpConn := field(reflect.TypeOf(net.TCPConn{}), "conn")
	fd := field(tcpConn.Type, "fd")
	pfd := field(fd.Type.Elem(), "pfd")
	sysfd := field(pfd.Type, "Sysfd")
	var c net.Conn = &net.TCPConn{}
	itab := *(*unsafe.Pointer)(unsafe.Pointer(&c))
	hash := *(*uint32)(unsafe.Add(itab, 16))
	fmt.Println(tlsConn.Offset+8, tcpConn.Offset+fd.Offset, pfd.Offset+sysfd.Offset, hash)
}

// closeReadAnswer is what the server of closeread sends.
const closeReadAnswer = "plaintext read after its connection was closed"

// closeReadBufs are the buffers closeread reads into, on the heap: a
// buffer on a goroutine's stack moves when the stack grows during the call
// (the server's first Read runs the handshake), and the probe at the
// return reads it where it was.
var closeReadBufs = [2][]byte{make([]byte, 64), make([]byte, 4096)}

// closingCache is a client session cache whose Put closes the connection:
// Go calls Put for a TLS 1.3 NewSessionTicket from inside (*tls.Conn).Read,
// after the record was read from the socket and before Read returns.
type closingCache struct {
	conn   *net.TCPConn
	closed bool
}

func (c *closingCache) Get(string) (*tls.ClientSessionState, bool) { return nil, false }

func (c *closingCache) Put(string, *tls.ClientSessionState) {
	if !c.closed {
		c.closed = true
		c.conn.Close()
	}
}

// closeRead makes a client Read that returns plaintext after another
// goroutine would have closed the connection, deterministically: the
// server requests a (optional) client certificate, so Go sends its session
// ticket only after the client's handshake is over; the client waits until
// the ticket and the server's answer are all in its socket, then one Read
// takes both in one read(2), handles the ticket (Put closes the fd) and
// returns the answer. The server keeps its end open until the client is
// done, so the client's socket is not at TCP_CLOSE when Read returns.
func closeRead(addr, cert, key string) error {
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	answered := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			answered <- err
			return
		}
		defer raw.Close()
		c := tls.Server(raw, &tls.Config{
			Certificates: []tls.Certificate{pair},
			MinVersion:   tls.VersionTLS13,
			ClientAuth:   tls.RequestClientCert,
		})
		if _, err := c.Read(closeReadBufs[0]); err != nil {
			answered <- err
			return
		}
		if _, err := c.Write([]byte(closeReadAnswer)); err != nil {
			answered <- err
			return
		}
		// Everything sent is acknowledged, so it is in the client's socket.
		answered <- waitSocket(raw.(*net.TCPConn), syscall.TIOCOUTQ, func(n int) bool { return n == 0 })
		<-done
	}()
	defer close(done)

	pem, err := os.ReadFile(cert)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return err
	}
	cache := &closingCache{conn: raw.(*net.TCPConn)}
	c := tls.Client(raw, &tls.Config{
		RootCAs:            pool,
		ServerName:         "localhost",
		MinVersion:         tls.VersionTLS13,
		ClientSessionCache: cache,
	})
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	if err := <-answered; err != nil {
		return err
	}
	// One read(2) of crypto/tls takes at least 512 bytes: all of it, then.
	pending := 0
	if err := waitSocket(cache.conn, syscall.TIOCINQ, func(n int) bool { pending = n; return true }); err != nil {
		return err
	}
	if pending == 0 || pending > 512 {
		return fmt.Errorf("%d bytes pending before Read, want 1 to 512", pending)
	}
	buf := closeReadBufs[1]
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !cache.closed {
		return fmt.Errorf("Read returned before the session ticket closed the connection")
	}
	if string(buf[:n]) != closeReadAnswer {
		return fmt.Errorf("read %q, want %q", buf[:n], closeReadAnswer)
	}
	return nil
}

// waitSocket polls ioctl(req) on c's socket until ok accepts the count.
func waitSocket(c *net.TCPConn, req uint, ok func(int) bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	for i := 0; i < 10000; i++ {
		var n int32
		var errno syscall.Errno
		if err := rc.Control(func(fd uintptr) {
			_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, uintptr(req), uintptr(unsafe.Pointer(&n)))
		}); err != nil {
			return err
		}
		if errno != 0 {
			return errno
		}
		if ok(int(n)) {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("ioctl %#x: no end in sight", req)
}
