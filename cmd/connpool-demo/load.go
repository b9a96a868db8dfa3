package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

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

// request sends one line and reads the echo. A failure may be a conn the
// backend closed while it sat idle or a backend that just went down: the conn
// is released (reporting the failure to the balancer) and the request
// retried, up to three tries in all, as a client of an idempotent service
// would.
func request(ctx context.Context, bp *balancer.Pool, msg string) (string, error) {
	var lastErr error
	for range 3 {
		conn, err := bp.Get(ctx)
		if err != nil {
			return "", err
		}
		c := conn.(*balancer.Conn)
		err = c.SetDeadline(time.Now().Add(2 * time.Second))
		if err == nil {
			err = testnet.RoundTrip(c, msg)
		}
		if err == nil {
			err = c.SetDeadline(time.Time{})
		}
		if err == nil {
			addr := c.Address()
			_ = c.Close() // the request succeeded; a close error cannot change that
			return addr, nil
		}
		_ = c.Release() // the request's error is the one to report
		lastErr = fmt.Errorf("%s: %w", c.Address(), err)
	}
	return "", lastErr
}
