package connpool_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// waitForTotalWaiters polls until n checkouts wait in the pool.
func waitForTotalWaiters(tb testing.TB, p *connpool.Pool, n int64) {
	tb.Helper()
	eventually(tb, func() bool { return p.Stats().Waiting == n },
		"want %d waiters, have %d", n, p.Stats().Waiting)
}

func TestMaxTotalRejectsANegativeCap(t *testing.T) {
	var d testnet.FakeDialer
	_, err := connpool.New(d.Dial, 1, 0, connpool.WithMaxTotal(-1))
	assert.ErrorIs(t, err, connpool.ErrInvalidConfig)
}

// At the cap, a checkout for one address closes the least recently
// returned idle conn of another to make room.
func TestMaxTotalEvictsTheOldestIdleConnOfAnotherAddress(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 4, 0, connpool.WithMaxTotal(2))
	giveBack(t, checkout(t, p, "a:1", 1)[0])
	giveBack(t, checkout(t, p, "b:1", 1)[0])

	c := checkout(t, p, "c:1", 1)[0]
	defer giveBack(t, c)
	st := p.Stats()
	assert.EqualValues(t, 2, st.Total)
	assert.EqualValues(t, 1, st.ClosedIdleCapEvicted)
	assert.EqualValues(t, 0, destination(st, "a:1").Idle, "a's conn was the oldest")
	assert.EqualValues(t, 1, destination(st, "b:1").Idle)
	assert.EqualValues(t, 2, d.Open())
}

// With every conn in use, checkouts of any address wait at the cap and are
// served in arrival order as conns come back: each returned conn is closed
// to make room for the oldest waiter, whatever its address.
func TestMaxTotalServesWaitersInArrivalOrderAcrossAddresses(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 4, 0, connpool.WithMaxTotal(2))
	held := append(checkout(t, p, "a:1", 1), checkout(t, p, "b:1", 1)...)

	const n = 6
	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
	)
	for i := range n {
		wg.Go(func() {
			c, err := p.Get("w:" + strconv.Itoa(i))
			if !assert.NoError(t, err) {
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			assert.NoError(t, c.Close()) // closed for the next waiter
		})
		waitForTotalWaiters(t, p, int64(i+1)) // i waits before i+1 starts
	}
	giveBack(t, held[0])
	wg.Wait()
	assert.Equal(t, []int{0, 1, 2, 3, 4, 5}, order)
	st := p.Stats()
	assert.LessOrEqual(t, st.Total, int64(2))
	assert.EqualValues(t, n, st.WaitCount)
	giveBack(t, held[1])
}

func TestMaxTotalWaitTimesOutWithErrExhausted(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 4, 0, connpool.WithMaxTotal(1), connpool.WithWaitTimeout(20*time.Millisecond))
	held := checkout(t, p, "a:1", 1)[0]
	_, err := p.Get("b:1")
	assert.ErrorIs(t, err, connpool.ErrExhausted)
	giveBack(t, held)
	c := checkout(t, p, "b:1", 1)[0] // the slot is free again; a's idle conn is evicted
	giveBack(t, c)
	assert.EqualValues(t, 1, p.Stats().Total)
	assert.Zero(t, p.Stats().Waiting)

	ctx, cancel := context.WithCancel(context.Background())
	held = checkout(t, p, "b:1", 1)[0]
	res := goGet(func() (net.Conn, error) { return p.GetContext(ctx, "c:1") })
	waitForTotalWaiters(t, p, 1)
	cancel()
	assert.ErrorIs(t, (<-res).err, context.Canceled)
	assert.Zero(t, p.Stats().Waiting)
	giveBack(t, held)
}

func TestMaxTotalCloseWakesWaiters(t *testing.T) {
	var d testnet.FakeDialer
	p, err := connpool.New(d.Dial, 4, 0, connpool.WithMaxTotal(1))
	require.NoError(t, err)
	held := checkout(t, p, "a:1", 1)[0]
	res := goGet(func() (net.Conn, error) { return p.Get("b:1") })
	waitForTotalWaiters(t, p, 1)
	require.NoError(t, p.Close())
	assert.ErrorIs(t, (<-res).err, connpool.ErrClosed)
	require.NoError(t, held.Close())
	assert.Zero(t, d.Open())
}

func TestMaxTotalWarmStopsAtTheCap(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 8, 0, connpool.WithMaxTotal(3))
	err := p.Warm(context.Background(), "a:1", 5)
	assert.ErrorIs(t, err, connpool.ErrExhausted)
	assert.EqualValues(t, 3, p.Stats().Total)
	assert.EqualValues(t, 3, d.Open())
}

// sessionServers are echo servers that count the sessions open across all
// of them, from accept until the server sees the client's close. Their
// dial function's conns return from Close only once the server has seen
// it, so that the count is exact: a slot the pool frees is free at the
// server too.
type sessionServers struct {
	lns     []net.Listener
	open    atomic.Int64
	maxOpen atomic.Int64
	seen    sync.Map // "client>server" addresses -> chan struct{}, closed when the session ends
	wg      sync.WaitGroup
}

func startSessionServers(t *testing.T, n int) *sessionServers {
	s := &sessionServers{}
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		s.lns = append(s.lns, ln)
		s.wg.Go(func() { s.serve(ln) })
	}
	t.Cleanup(func() {
		for _, ln := range s.lns {
			ln.Close()
		}
		s.wg.Wait()
	})
	return s
}

func (s *sessionServers) ended(client string) chan struct{} {
	ch, _ := s.seen.LoadOrStore(client, make(chan struct{}))
	return ch.(chan struct{})
}

func (s *sessionServers) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if n := s.open.Add(1); n > s.maxOpen.Load() {
			for m := s.maxOpen.Load(); n > m && !s.maxOpen.CompareAndSwap(m, n); m = s.maxOpen.Load() {
			}
		}
		s.wg.Go(func() {
			_, _ = io.Copy(c, c)
			s.open.Add(-1)
			close(s.ended(c.RemoteAddr().String() + ">" + c.LocalAddr().String()))
			c.Close()
		})
	}
}

// sessionConn closes its socket, then waits until the server saw it.
type sessionConn struct {
	net.Conn
	s *sessionServers
}

var errSessionNotEnded = errors.New("the server never saw the close")

func (c *sessionConn) Close() error {
	err := c.Conn.Close()
	key := c.LocalAddr().String() + ">" + c.RemoteAddr().String()
	select {
	case <-c.s.ended(key):
		c.s.seen.Delete(key)
	case <-time.After(10 * time.Second):
		return errSessionNotEnded
	}
	return err
}

func (s *sessionServers) dial(address string) (net.Conn, error) {
	nc, err := net.Dial("tcp", address)
	if err != nil {
		return nil, err
	}
	return &sessionConn{nc, s}, nil
}

// 64 goroutines make requests over 8 addresses with a cap of 10: the
// servers never see more than 10 sessions at once, and every request
// completes.
func TestMaxTotalCapsTheSessionsServersSee(t *testing.T) {
	const (
		goroutines = 64
		addresses  = 8
		cap        = 10
		requests   = 30
	)
	s := startSessionServers(t, addresses)
	p := newPool(t, s.dial, 4, time.Minute, connpool.WithMaxTotal(cap))
	var failed atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range requests {
				addr := s.lns[(g+i)%addresses].Addr().String()
				err := p.Do(context.Background(), addr, func(c *connpool.Conn) error {
					return testnet.RoundTrip(c, "ping")
				})
				if err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	assert.Zero(t, failed.Load(), "every request completes")
	assert.LessOrEqual(t, s.maxOpen.Load(), int64(cap), "sessions open at once at the servers")
	st := p.Stats()
	assert.LessOrEqual(t, st.Total, int64(cap))
	assert.Positive(t, st.WaitCount, "the cap made checkouts wait")
	t.Logf("most sessions at once %d; dials %d, reuses %d, waits %d, evictions %d",
		s.maxOpen.Load(), st.Dials, st.Reuses, st.WaitCount, st.ClosedIdleCapEvicted)
}

// TestMaxTotalWaitTimeoutBoundsTheWholeWait: a Get that waits at its
// address's WithMaxActive limit and is then granted a slot while the pool
// is at WithMaxTotal goes on waiting at the total cap only for what is left
// of its WithWaitTimeout, and counts once in WaitCount.
func TestMaxTotalWaitTimeoutBoundsTheWholeWait(t *testing.T) {
	var d testnet.FakeDialer
	const timeout = time.Second
	p := newPool(t, d.Dial, 4, 0, connpool.WithMaxTotal(2), connpool.WithMaxActive(1),
		connpool.WithWaitTimeout(timeout))
	a := checkout(t, p, "a:1", 1)[0]
	b := checkout(t, p, "b:1", 1)[0]
	defer giveBack(t, b)

	// W waits at the total cap for c:1; it will take the slot a frees.
	wDone := make(chan net.Conn, 1)
	go func() {
		c, _ := p.Get("c:1")
		wDone <- c
	}()
	waitForTotalWaiters(t, p, 1)

	// G waits at a:1's MaxActive limit.
	start := time.Now()
	gDone := make(chan error, 1)
	go func() {
		c, err := p.Get("a:1")
		if err == nil {
			_ = c.Close()
		}
		gDone <- err
	}()
	waitForTotalWaiters(t, p, 2)
	time.Sleep(timeout / 2)
	require.NoError(t, a.(*connpool.Conn).Release()) // a:1's slot goes to G, the total slot to W

	if c := <-wDone; c != nil {
		defer giveBack(t, c)
	}
	err := <-gDone
	elapsed := time.Since(start)
	assert.ErrorIs(t, err, connpool.ErrExhausted)
	assert.Less(t, elapsed, timeout+timeout/4, "the checkout waited %v with a wait timeout of %v", elapsed, timeout)
	assert.EqualValues(t, 1, destination(p.Stats(), "a:1").WaitCount, "one checkout waited at a:1")
}
