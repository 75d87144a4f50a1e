// nettap-ferretdb: a real MongoDB wire-protocol server for the MongoDB
// tests (tests/tests/mongodb_bpf.rs): FerretDB 1.x's embeddable package on
// its pure-Go SQLite backend, so no PostgreSQL is needed; with a
// certificate it speaks TLS through Go's crypto/tls (the Go TLS probes'
// server end). Built and cached by ci/install-k8s.sh. Its own main package
// because FerretDB's refuses to start without the version files its
// release build generates.
//
// Usage: ferretdb LISTEN_ADDR DATA_DIR [CERT KEY] (with CERT and KEY, the
// address speaks only TLS; prints "listening ADDR" once bound).
package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	if len(os.Args) != 3 && len(os.Args) != 5 {
		log.Fatalf("usage: %s LISTEN_ADDR DATA_DIR [CERT KEY]", os.Args[0])
	}
	listener := ferretdb.ListenerConfig{TCP: os.Args[1]}
	if len(os.Args) == 5 {
		listener = ferretdb.ListenerConfig{TLS: os.Args[1], TLSCertFile: os.Args[3], TLSKeyFile: os.Args[4]}
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  listener,
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + os.Args[2] + "/",
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Println("listening", os.Args[1])
	if err := f.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
