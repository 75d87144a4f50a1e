// goload makes HTTPS (or HTTP) requests at a fixed rate for a bounded time,
// open loop: request i is due at start + i/rate whether or not earlier ones
// have finished, and its latency counts from when it was due (so a stall in
// the server or the client is not hidden). It prints one JSON object:
//
//	{"rate":1000,"seconds":10,"sent":10000,"ok":10000,"errors":0,"late":0,
//	 "p50_ms":0.41,"p90_ms":…,"p99_ms":…,"max_ms":…}
//
// sent counts requests written; ok those answered with the expected status;
// late counts due requests not sent because -max-inflight were outstanding;
// cpu_ms is goload's own user + system time.
//
//	goload -url https://127.0.0.1:19443/1k -rate 1000 -duration 10s [-cacert cert.pem] [-insecure]
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type result struct {
	URL      string  `json:"url"`
	Rate     float64 `json:"rate"`
	Seconds  float64 `json:"seconds"`
	Sent     int64   `json:"sent"`
	OK       int64   `json:"ok"`
	Errors   int64   `json:"errors"`
	Late     int64   `json:"late"`
	Achieved float64 `json:"achieved_per_sec"`
	P50      float64 `json:"p50_ms"`
	P90      float64 `json:"p90_ms"`
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`
	CPUms    float64 `json:"cpu_ms"`
	FirstErr string  `json:"first_error,omitempty"`
}

func main() {
	url := flag.String("url", "", "URL to request (GET)")
	rate := flag.Float64("rate", 100, "requests per second")
	duration := flag.Duration("duration", 10*time.Second, "how long to send")
	maxInflight := flag.Int("max-inflight", 2000, "outstanding requests at most; a due request beyond it is counted late, not sent")
	conns := flag.Int("conns", 256, "keep-alive connections kept at most")
	cacert := flag.String("cacert", "", "PEM file of the server's certificate (or its CA)")
	insecure := flag.Bool("insecure", false, "do not verify the server's certificate")
	timeout := flag.Duration("timeout", 10*time.Second, "per-request timeout")
	status := flag.Int("status", 200, "the status counted as ok")
	flag.Parse()
	if *url == "" || *rate <= 0 {
		fmt.Fprintln(os.Stderr, "goload: -url and a positive -rate are required")
		os.Exit(2)
	}

	tlsConf := &tls.Config{InsecureSkipVerify: *insecure}
	if *cacert != "" {
		pem, err := os.ReadFile(*cacert)
		if err != nil {
			fmt.Fprintln(os.Stderr, "goload:", err)
			os.Exit(2)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintln(os.Stderr, "goload: no certificate in", *cacert)
			os.Exit(2)
		}
		tlsConf.RootCAs = pool
	}
	tr := &http.Transport{
		TLSClientConfig:     tlsConf,
		MaxIdleConns:        *conns,
		MaxIdleConnsPerHost: *conns,
		MaxConnsPerHost:     *conns,
		IdleConnTimeout:     time.Minute,
		// HTTP/1.1: one exchange per request on a keep-alive connection.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	client := &http.Client{Transport: tr, Timeout: *timeout}

	var sent, ok, errs, late, inflight atomic.Int64
	var firstErr atomic.Value
	var mu sync.Mutex
	lat := make([]time.Duration, 0, int(*rate*duration.Seconds())+16)
	var wg sync.WaitGroup

	interval := time.Duration(float64(time.Second) / *rate)
	start := time.Now()
	total := int64(*rate * duration.Seconds())
	for i := int64(0); i < total; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		if inflight.Load() >= int64(*maxInflight) {
			late.Add(1)
			continue
		}
		inflight.Add(1)
		sent.Add(1)
		wg.Add(1)
		go func(due time.Time) {
			defer wg.Done()
			defer inflight.Add(-1)
			resp, err := client.Get(*url)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != *status {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			took := time.Since(due)
			if err != nil {
				errs.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			ok.Add(1)
			mu.Lock()
			lat = append(lat, took)
			mu.Unlock()
		}(due)
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()

	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		k := int(p * float64(len(lat)-1))
		return float64(lat[k].Microseconds()) / 1000
	}
	r := result{
		URL: *url, Rate: *rate, Seconds: duration.Seconds(),
		Sent: sent.Load(), OK: ok.Load(), Errors: errs.Load(), Late: late.Load(),
		Achieved: float64(ok.Load()) / elapsed,
		P50:      pct(0.50), P90: pct(0.90), P99: pct(0.99), Max: pct(1),
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		r.CPUms = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e6
	}
	if e, _ := firstErr.Load().(string); e != "" {
		r.FirstErr = e
	}
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
}
