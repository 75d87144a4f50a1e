// The plaintext peers of the arm64 guest tests (tests/tests/kernel_matrix_arm64_vm.rs),
// where exchange.py cannot run (the guest has no Python): a TCP exchange of
// exact payloads and a DNS server, built with GOARCH=arm64.
//
//	guestpeer server -listen ADDR -sizes 1,100 -dump DIR -ready FILE
//	guestpeer client -connect HOST:PORT -sizes 1,100 -dump DIR
//	guestpeer dns -listen 127.0.0.1:53 -name api.example.test -a 127.0.0.1 -ready FILE
//
// The exchange is exchange.py's: for each size the client sends a payload of
// that size, the server reads it whole and answers with its own payload of the
// same size. Each side dumps what it sent and received, and its pid, comm and
// endpoints, to DIR/{server,client}.{sent,recv,info} (peer_info in tests/src).
// The client resolves HOST through the system's resolver (/etc/resolv.conf),
// so `dns` can name the connection. dns answers A queries for -name with -a,
// every other question with no answer.
package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: guestpeer server|client|dns ...")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	listen := fs.String("listen", "", "server, dns: listen address")
	connect := fs.String("connect", "", "client: HOST:PORT")
	sizes := fs.String("sizes", "1", "payload sizes, in order")
	dump := fs.String("dump", ".", "directory for the dumps")
	ready := fs.String("ready", "", "file created once listening")
	name := fs.String("name", "", "dns: the name answered")
	a := fs.String("a", "", "dns: its IPv4 address")
	fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "server":
		err = server(*listen, *sizes, *dump, *ready)
	case "client":
		err = client(*connect, *sizes, *dump)
	case "dns":
		err = serveDNS(*listen, *name, *a, *ready)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// payload is reproducible per side and message, and differs between them.
func payload(who string, index, size int) []byte {
	r := rand.New(rand.NewSource(int64(len(who)*1000003 + index)))
	b := make([]byte, size)
	r.Read(b)
	return b
}

func server(listen, sizes, dump, ready string) error {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	if err := os.WriteFile(ready, []byte("ready\n"), 0o644); err != nil {
		return err
	}
	c, err := l.Accept()
	if err != nil {
		return err
	}
	l.Close()
	return exchange(c, "server", sizes, dump)
}

func client(connect, sizes, dump string) error {
	c, err := net.Dial("tcp", connect)
	if err != nil {
		return err
	}
	return exchange(c, "client", sizes, dump)
}

func exchange(c net.Conn, who, sizes, dump string) error {
	defer c.Close()
	list, err := parseSizes(sizes)
	if err != nil {
		return err
	}
	var sent, recv []byte
	for i, n := range list {
		mine := payload(who, i, n)
		got := make([]byte, n)
		if who == "client" {
			if _, err := c.Write(mine); err != nil {
				return err
			}
		}
		if _, err := io.ReadFull(c, got); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		if who == "server" {
			if _, err := c.Write(mine); err != nil {
				return err
			}
		}
		sent, recv = append(sent, mine...), append(recv, got...)
	}
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		return err
	}
	info, _ := json.Marshal(map[string]any{
		"pid":    os.Getpid(),
		"comm":   strings.TrimSpace(string(comm)),
		"local":  c.LocalAddr().String(),
		"remote": c.RemoteAddr().String(),
	})
	for ext, b := range map[string][]byte{"sent": sent, "recv": recv, "info": info} {
		if err := os.WriteFile(filepath.Join(dump, who+"."+ext), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// serveDNS answers until killed.
func serveDNS(listen, name, a, ready string) error {
	ip := net.ParseIP(a).To4()
	if ip == nil {
		return fmt.Errorf("-a %q is not an IPv4 address", a)
	}
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return err
	}
	if err := os.WriteFile(ready, []byte("ready\n"), 0o644); err != nil {
		return err
	}
	buf := make([]byte, 512)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		if out, err := answer(buf[:n], name, ip); err == nil {
			pc.WriteTo(out, from)
		}
	}
}

// answer is the response to one query: its header and question, and an A
// record when the question is `name` IN A.
func answer(q []byte, name string, ip net.IP) ([]byte, error) {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil, errors.New("not one question")
	}
	end := 12
	var labels []string
	for end < len(q) && q[end] != 0 {
		l := int(q[end])
		if end+1+l > len(q) {
			return nil, errors.New("truncated name")
		}
		labels = append(labels, string(q[end+1:end+1+l]))
		end += 1 + l
	}
	if end+5 > len(q) {
		return nil, errors.New("truncated question")
	}
	qtype := binary.BigEndian.Uint16(q[end+1:])
	question := q[12 : end+5]
	match := strings.EqualFold(strings.Join(labels, "."), strings.TrimSuffix(name, ".")) && qtype == 1
	out := make([]byte, 12, 12+len(question)+16)
	copy(out, q[:2])
	out[2] = 0x84 | q[2]&0x01 // response, authoritative, RD copied
	out[3] = 0x80             // RA, NOERROR
	binary.BigEndian.PutUint16(out[4:], 1)
	out = append(out, question...)
	if match {
		binary.BigEndian.PutUint16(out[6:], 1)
		// Name by pointer to the question, type A, class IN, TTL 60, 4 bytes.
		out = append(out, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
		out = append(out, ip...)
	}
	return out, nil
}
