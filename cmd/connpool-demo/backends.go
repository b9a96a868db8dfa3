package main

import (
	"sync/atomic"
	"time"

	"github.com/seed73091bf1/connpool/internal/testnet"
)

// backend is one destination and what the demo saw of it.
type backend struct {
	addr   string
	server *testnet.EchoServer // nil for real backends

	latency   *Recorder // of successful requests, written by the clients
	ejections atomic.Int64

	// interval and total are the latencies of the last interval and since
	// the start, kept by the meter.
	interval, total *Histogram
}

func newBackend(addr string, server *testnet.EchoServer) *backend {
	return &backend{addr: addr, server: server, latency: newRecorder(), interval: newHistogram(), total: newHistogram()}
}

// startBackends starts the five built-in backends, the second one slow, or,
// given addresses, names those real backends.
func startBackends(addrs []string) ([]*backend, error) {
	var out []*backend
	for _, addr := range addrs {
		out = append(out, newBackend(addr, nil))
	}
	if len(out) > 0 {
		return out, nil
	}
	for i := range 5 {
		delay := time.Millisecond
		if i == 1 {
			delay = 20 * time.Millisecond
		}
		srv, err := testnet.ListenFault("127.0.0.1:0", testnet.Faults{Delay: delay})
		if err != nil {
			closeBackends(out)
			return nil, err
		}
		out = append(out, newBackend(srv.Addr(), srv))
	}
	return out, nil
}

// closeBackends stops the built-in backends.
func closeBackends(backends []*backend) {
	for _, b := range backends {
		if b.server != nil {
			b.server.Close()
		}
	}
}

// describe names a backend for the header.
func describe(b *backend) string {
	if b.server == nil {
		return b.addr
	}
	return b.addr + " (built-in)"
}
