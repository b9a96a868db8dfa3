package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// load is what the concurrent clients share: where they send requests and
// where they count the outcomes.
type load struct {
	bp     *balancer.Pool
	byAddr map[string]*backend
	con    *console

	failed atomic.Int64
	errs   *errorLog
}

// client sends requests one after another until stop is closed. A failed
// request is counted, and printed only if it is the first of its kind, so
// that a dead cluster does not flood the output.
func (l *load) client(id int, stop <-chan struct{}) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		start := time.Now()
		ctx := balancer.WithKey(context.Background(), "key-"+strconv.Itoa(rand.IntN(1000)))
		addr, err := request(ctx, l.bp, fmt.Sprintf("client %d request %d", id, i))
		elapsed := time.Since(start)
		if err != nil {
			l.failed.Add(1)
			if l.errs.Add(err) {
				l.con.Event("request failed: %v (the first such error; more are counted, not shown)", err)
			}
			continue
		}
		if b := l.byAddr[addr]; b != nil {
			b.latency.Record(elapsed)
		}
	}
}

// request sends one line and reads the echo through bp.Do, as a client of
// an idempotent service would: a conn the backend closed while it sat idle
// is retried on a fresh conn, a backend that went down mid-request is
// retried on another one, and a failed dial moves to another backend, all
// within the pool's retry budget. It returns the address that answered.
func request(ctx context.Context, bp *balancer.Pool, msg string) (string, error) {
	var addr string
	err := bp.Do(ctx, func(c *balancer.Conn) error {
		addr = c.Address()
		if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
			return err
		}
		if err := testnet.RoundTrip(c, msg); err != nil {
			return err
		}
		return c.SetDeadline(time.Time{})
	}, connpool.Idempotent())
	return addr, err
}
