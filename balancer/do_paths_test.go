package balancer_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
)

type rvConn struct {
	addr   string
	broken atomic.Bool
	closed atomic.Bool
	d      *rvDialer
}

func (c *rvConn) Read(p []byte) (int, error) {
	if c.broken.Load() || c.closed.Load() {
		return 0, io.EOF
	}
	if len(p) > 0 {
		p[0] = '+'
		return 1, nil
	}
	return 0, nil
}

func (c *rvConn) Write(p []byte) (int, error) {
	if c.broken.Load() || c.closed.Load() {
		return 0, io.EOF
	}
	return len(p), nil
}

func (c *rvConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.d.open.Add(-1)
	}
	return nil
}

type rvAddr string

func (a rvAddr) Network() string { return "rv" }
func (a rvAddr) String() string  { return string(a) }

func (c *rvConn) LocalAddr() net.Addr              { return rvAddr("local") }
func (c *rvConn) RemoteAddr() net.Addr             { return rvAddr(c.addr) }
func (c *rvConn) SetDeadline(time.Time) error      { return nil }
func (c *rvConn) SetReadDeadline(time.Time) error  { return nil }
func (c *rvConn) SetWriteDeadline(time.Time) error { return nil }

type rvDialer struct {
	mu     sync.Mutex
	dead   map[string]bool
	broken map[string]bool
	conns  []*rvConn
	dials  map[string]int
	open   atomic.Int64
}

func newRVDialer() *rvDialer {
	return &rvDialer{dead: map[string]bool{}, broken: map[string]bool{}, dials: map[string]int{}}
}

var errRVRefused = errors.New("rv: connection refused")

func (d *rvDialer) Dial(addr string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dials[addr]++
	if d.dead[addr] {
		return nil, errRVRefused
	}
	c := &rvConn{addr: addr, d: d}
	c.broken.Store(d.broken[addr])
	d.conns = append(d.conns, c)
	d.open.Add(1)
	return c, nil
}

func (d *rvDialer) set(addr string, dead, broken bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dead[addr] = dead
	d.broken[addr] = broken
}

func (d *rvDialer) breakAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.broken.Store(true)
	}
}

func rvRW(c *balancer.Conn) error {
	if _, err := c.Write([]byte("x")); err != nil {
		return err
	}
	_, err := c.Read(make([]byte, 1))
	return err
}

var rvAddrs = []string{"a:1", "b:1", "c:1"}

func rvSetup(t *testing.T, opts ...connpool.Option) (*rvDialer, *connpool.Pool, *balancer.RoundRobin, *balancer.Pool) {
	t.Helper()
	d := newRVDialer()
	p, err := connpool.New(d.Dial, 4, time.Minute, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	eps := make([]balancer.Endpoint, len(rvAddrs))
	for i, a := range rvAddrs {
		eps[i] = balancer.Endpoint{Address: a}
	}
	rr := balancer.NewRoundRobin(eps, balancer.WithEjection(1<<30, time.Second, time.Second))
	return d, p, rr, balancer.NewPool(p, rr)
}

// rvPrimeStale gives every backend one idle conn, then breaks them all.
func rvPrimeStale(t *testing.T, d *rvDialer, bp *balancer.Pool) {
	t.Helper()
	for range rvAddrs {
		if err := bp.Do(context.Background(), rvRW); err != nil {
			t.Fatal(err)
		}
	}
	d.breakAll()
}

// Regression: a retry the budget refused was asked for twice, counted twice
// in RetryBudgetExhausted, and could go to another backend on the floor.
func TestPoolDoCountsARefusedRetryOnce(t *testing.T) {
	d, p, _, bp := rvSetup(t, connpool.WithRetryBudget(0, 0)) // no retries at all
	ctx := context.Background()
	rvPrimeStale(t, d, bp)
	n := 0
	err := bp.Do(ctx, func(c *balancer.Conn) error { n++; return rvRW(c) }, connpool.Idempotent())
	if err == nil || n != 1 {
		t.Fatalf("n %d err %v", n, err)
	}
	s := p.Stats()
	if s.RetryBudgetExhausted != 1 || s.Retries != 0 {
		t.Fatalf("one request, one refused retry: RetryBudgetExhausted %d, Retries %d", s.RetryBudgetExhausted, s.Retries)
	}
}

// Regression: WithRetries(0) still retried an idempotent request on another
// backend.
func TestPoolDoWithRetriesZeroMakesNoRetry(t *testing.T) {
	d, p, _, bp := rvSetup(t)
	ctx := context.Background()
	for _, a := range rvAddrs {
		d.set(a, false, true)
	}
	n := 0
	err := bp.Do(ctx, func(c *balancer.Conn) error { n++; return rvRW(c) }, connpool.Idempotent(), connpool.WithRetries(0))
	if err == nil {
		t.Fatal("no error")
	}
	if n != 1 {
		t.Errorf("WithRetries(0): fn ran %d times, Retries %d", n, p.Stats().Retries)
	}
}
