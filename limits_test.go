package connpool_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// waitForWaiters polls until n checkouts wait at address.
func waitForWaiters(tb testing.TB, p *connpool.Pool, address string, n int64) {
	tb.Helper()
	eventually(tb, func() bool { return destination(p.Stats(), address).Waiting == n },
		"want %d waiters at %s, have %d", n, address, destination(p.Stats(), address).Waiting)
}

// result is the outcome of a checkout run in a goroutine.
type result struct {
	c   net.Conn
	err error
}

func goGet(get func() (net.Conn, error)) <-chan result {
	ch := make(chan result, 1)
	go func() {
		c, err := get()
		ch <- result{c, err}
	}()
	return ch
}

func TestNewRejectsBadLimits(t *testing.T) {
	var d testnet.FakeDialer
	for _, tt := range []struct {
		name string
		opt  connpool.Option
		want string
	}{
		{"max active", connpool.WithMaxActive(-1), "WithMaxActive(-1) is negative"},
		{"max idle", connpool.WithMaxIdle(-2), "WithMaxIdle(-2) is negative"},
		{"max lifetime", connpool.WithMaxLifetime(-time.Second), "WithMaxLifetime(-1s) is negative"},
		{"wait timeout", connpool.WithWaitTimeout(-time.Millisecond), "WithWaitTimeout(-1ms) is negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := connpool.New(d.Dial, 4, 0, tt.opt)
			assert.Nil(t, p)
			assert.ErrorIs(t, err, connpool.ErrInvalidConfig)
			assert.ErrorContains(t, err, tt.want)
		})
	}
}

// Regression: fatih/pool #26 created 60 conns against a cap of 30, because
// its cap only bounded idle conns. Counted on the server side.
func TestMaxActiveCapsSessionsTheServerSees(t *testing.T) {
	srv := testnet.StartEcho(t)
	p := newPool(t, tcpDial, 4, time.Minute, connpool.WithMaxActive(4))

	const goroutines, requests = 64, 20
	var done atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range requests {
				c, err := p.Get(srv.Addr())
				if !assert.NoError(t, err) {
					return
				}
				if !assert.NoError(t, testnet.RoundTrip(c, fmt.Sprintf("g%d-%d", g, i))) {
					c.(*connpool.Conn).Release()
					return
				}
				assert.NoError(t, c.Close())
				done.Add(1)
			}
		}()
	}
	wg.Wait()

	assert.EqualValues(t, goroutines*requests, done.Load(), "every request completes")
	assert.LessOrEqual(t, srv.MaxOpen(), int64(4), "sessions open at once on the server")
	assert.LessOrEqual(t, srv.Accepted(), int64(4), "sessions ever accepted")
	s := p.Stats()
	assert.Positive(t, s.WaitCount)
	assert.EqualValues(t, 0, s.Waiting)
}

// TestMaxActiveBoundsConnsUnderChurn mixes Get, New, Close and Release, so
// that conns are closed and dialed all the time, and checks on the dial side
// that no more than the cap ever exist, counting dials in flight.
func TestMaxActiveBoundsConnsUnderChurn(t *testing.T) {
	d := testnet.NewCountingDialer()
	p := newPool(t, d.Dial, 2, 0, connpool.WithMaxActive(3))

	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				get := p.Get
				if (g+i)%5 == 0 {
					get = p.New
				}
				c, err := get("a:1")
				if !assert.NoError(t, err) {
					return
				}
				if (g+i)%3 == 0 {
					assert.NoError(t, c.(*connpool.Conn).Release())
				} else {
					assert.NoError(t, c.Close())
				}
			}
		}()
	}
	wg.Wait()

	assert.LessOrEqual(t, d.MaxLive(), int64(3))
	s := p.Stats()
	assert.Equal(t, d.Open(), s.Total)
	assert.EqualValues(t, 0, s.Waiting)
}

func TestReturnedConnGoesStraightToTheOldestWaiter(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 4, 0, connpool.WithMaxActive(1))

	held := checkout(t, p, "a:1", 1)[0]
	got := goGet(func() (net.Conn, error) { return p.Get("a:1") })
	waitForWaiters(t, p, "a:1", 1)

	giveBack(t, held)
	r := <-got
	require.NoError(t, r.err)
	assert.Equal(t, id(held), id(r.c), "the waiter gets the returned socket")
	assert.NotSame(t, held, r.c, "with a new handle")
	s := destination(p.Stats(), "a:1")
	assert.EqualValues(t, 0, s.Idle, "the conn never rested in the idle stack")
	assert.EqualValues(t, 1, s.Total)
	assert.EqualValues(t, 1, d.Dials())
	giveBack(t, r.c)
}

// Regression: go-redis #3777 served waiters out of arrival order.
func TestWaitersAreServedInArrivalOrder(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 4, 0, connpool.WithMaxActive(1))

	held := checkout(t, p, "a:1", 1)[0]
	const n = 8
	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := p.Get("a:1")
			if !assert.NoError(t, err) {
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			assert.NoError(t, c.Close()) // hands it to the next waiter
		}()
		waitForWaiters(t, p, "a:1", int64(i+1)) // i is queued before i+1 starts
	}
	giveBack(t, held)
	wg.Wait()
	assert.Equal(t, []int{0, 1, 2, 3, 4, 5, 6, 7}, order)
	assert.EqualValues(t, 1, d.Dials())
}

// Regression: go-redis #3680 left a "zombie" entry behind for a waiter that
// gave up, which later swallowed a conn or a slot.
func TestWaiterThatGivesUpLeavesNoEntryBehind(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 4, 0, connpool.WithMaxActive(1))

	held := checkout(t, p, "a:1", 1)[0]
	ctx, cancel := context.WithCancel(context.Background())
	got := goGet(func() (net.Conn, error) { return p.GetContext(ctx, "a:1") })
	waitForWaiters(t, p, "a:1", 1)
	cancel()
	r := <-got
	assert.Nil(t, r.c)
	assert.ErrorIs(t, r.err, context.Canceled)
	assert.EqualValues(t, 0, destination(p.Stats(), "a:1").Waiting)

	// The returned conn is not handed to the departed waiter: it rests idle
	// and the next Get takes it.
	giveBack(t, held)
	assert.EqualValues(t, 1, destination(p.Stats(), "a:1").Idle)
	c := checkout(t, p, "a:1", 1)[0]
	assert.Equal(t, id(held), id(c))
	giveBack(t, c)
}

// TestGivingUpRacingWithHandOffLosesNothing cancels waiters while conns are
// returned and released around them, then checks that every slot came back.
func TestGivingUpRacingWithHandOffLosesNothing(t *testing.T) {
	d := testnet.NewCountingDialer()
	p := newPool(t, d.Dial, 4, 0, connpool.WithMaxActive(2))

	var wg sync.WaitGroup
	for g := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				ctx, cancel := context.WithCancel(context.Background())
				if (g+i)%4 == 0 {
					cancel() // some give up at once, some race with a delivery
				} else {
					time.AfterFunc(time.Duration(i%3)*time.Microsecond, cancel)
				}
				c, err := p.GetContext(ctx, "a:1")
				cancel()
				if err != nil {
					assert.ErrorIs(t, err, context.Canceled)
					continue
				}
				if i%7 == 0 {
					assert.NoError(t, c.(*connpool.Conn).Release())
				} else {
					assert.NoError(t, c.Close())
				}
			}
		}()
	}
	wg.Wait()

	// Dials abandoned by a cancelled caller finish in the background.
	eventually(t, func() bool { return d.Dialing() == 0 }, "dials still in flight")
	eventually(t, func() bool { return destination(p.Stats(), "a:1").Total == d.Open() },
		"pool counts %d conns, %d are open", destination(p.Stats(), "a:1").Total, d.Open())
	s := destination(p.Stats(), "a:1")
	assert.EqualValues(t, 0, s.Waiting)
	assert.LessOrEqual(t, d.MaxLive(), int64(2))

	// Both slots are free again: two checkouts succeed without waiting.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := p.GetContext(ctx, "a:1")
	require.NoError(t, err)
	b, err := p.GetContext(ctx, "a:1")
	require.NoError(t, err)
	giveBack(t, a, b)
}

func TestWaitTimeoutReturnsErrExhausted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d testnet.FakeDialer
		p, err := connpool.New(d.Dial, 4, 0, connpool.WithMaxActive(1), connpool.WithWaitTimeout(20*time.Millisecond))
		require.NoError(t, err)
		defer p.Close()

		held := checkout(t, p, "a:1", 1)[0]
		for name, get := range map[string]func() (net.Conn, error){
			"Get": func() (net.Conn, error) { return p.Get("a:1") },
			"New": func() (net.Conn, error) { return p.New("a:1") },
		} {
			start := time.Now()
			c, err := get()
			assert.Nil(t, c, name)
			assert.ErrorIs(t, err, connpool.ErrExhausted, name)
			assert.Equal(t, 20*time.Millisecond, time.Since(start), name)
		}
		s := destination(p.Stats(), "a:1")
		assert.EqualValues(t, 0, s.Waiting)
		assert.EqualValues(t, 2, s.WaitCount)
		assert.Equal(t, 40*time.Millisecond, s.WaitDuration)

		giveBack(t, held)
		c, err := p.Get("a:1")
		require.NoError(t, err, "the slot is usable after the timeouts")
		giveBack(t, c)
	})
}

func TestGetContextStopsWaitingAtItsDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d testnet.FakeDialer
		p, err := connpool.New(d.Dial, 4, 0, connpool.WithMaxActive(1), connpool.WithWaitTimeout(time.Hour))
		require.NoError(t, err)
		defer p.Close()

		held := checkout(t, p, "a:1", 1)[0]
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = p.GetContext(ctx, "a:1")
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 15*time.Millisecond, time.Since(start))
		giveBack(t, held)
	})
}

func TestPoolCloseWakesEveryWaiterWithErrClosed(t *testing.T) {
	var d testnet.FakeDialer
	p, err := connpool.New(d.Dial, 4, 0, connpool.WithMaxActive(1))
	require.NoError(t, err)

	held := checkout(t, p, "a:1", 1)[0]
	waiters := []<-chan result{
		goGet(func() (net.Conn, error) { return p.Get("a:1") }),
		goGet(func() (net.Conn, error) { return p.GetContext(context.Background(), "a:1") }),
		goGet(func() (net.Conn, error) { return p.New("a:1") }),
	}
	waitForWaiters(t, p, "a:1", 3)
	require.NoError(t, p.Close())
	for _, w := range waiters {
		r := <-w
		assert.Nil(t, r.c)
		assert.ErrorIs(t, r.err, connpool.ErrClosed)
	}
	giveBack(t, held)
	assert.EqualValues(t, 0, d.Open())
	assert.EqualValues(t, 1, d.Dials())
}

func TestFailedDialsFreeTheirSlots(t *testing.T) {
	d := testnet.NewCountingDialer()
	d.Gate = make(chan struct{})
	p := newPool(t, d.Dial, 4, 0, connpool.WithMaxActive(1))

	// A dial holds the only slot; a second checkout waits behind it.
	d.Refuse.Store(true)
	first := goGet(func() (net.Conn, error) { return p.Get("a:1") })
	eventually(t, func() bool { return d.Dialing() == 1 }, "the first dial never started")
	second := goGet(func() (net.Conn, error) { return p.Get("a:1") })
	waitForWaiters(t, p, "a:1", 1)

	d.Gate <- struct{}{} // the first dial fails...
	r := <-first
	assert.ErrorIs(t, r.err, testnet.ErrRefused)
	d.Refuse.Store(false)
	d.Gate <- struct{}{} // ...and its slot lets the waiter dial
	r = <-second
	require.NoError(t, r.err)
	s := destination(p.Stats(), "a:1")
	assert.EqualValues(t, 1, s.DialErrors)
	assert.EqualValues(t, 1, s.Total)
	giveBack(t, r.c)
}

func TestRefusingBackendDoesNotWedgeTheAddressAfterItRecovers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // the backend is down: dials are refused

	p := newPool(t, tcpDial, 4, time.Minute, connpool.WithMaxActive(2))
	var wg sync.WaitGroup
	var failures atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				c, err := p.Get(addr)
				if err == nil {
					c.Close()
					continue
				}
				var de *connpool.DialError
				assert.ErrorAs(t, err, &de)
				failures.Add(1)
			}
		}()
	}
	wg.Wait()
	assert.EqualValues(t, 40, failures.Load(), "every Get fails while the backend is down")
	s := destination(p.Stats(), addr)
	assert.EqualValues(t, 0, s.Total)
	assert.EqualValues(t, 0, s.Waiting)

	srv, err := testnet.ListenEchoOn(addr) // the backend comes back
	require.NoError(t, err)
	defer srv.Close()
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				c, err := p.Get(addr)
				if !assert.NoError(t, err) {
					return
				}
				assert.NoError(t, testnet.RoundTrip(c, fmt.Sprintf("%d-%d", g, i)))
				assert.NoError(t, c.Close())
			}
		}()
	}
	wg.Wait()
	assert.LessOrEqual(t, srv.MaxOpen(), int64(2))
}

func TestNewWaitsForASlotAndIsNotHandedAUsedConn(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 4, 0, connpool.WithMaxActive(1))

	held := checkout(t, p, "a:1", 1)[0]
	got := goGet(func() (net.Conn, error) { return p.New("a:1") })
	waitForWaiters(t, p, "a:1", 1)
	giveBack(t, held)
	r := <-got
	require.NoError(t, r.err)
	assert.NotEqual(t, id(held), id(r.c), "New dials a fresh conn")
	s := destination(p.Stats(), "a:1")
	assert.EqualValues(t, 1, s.ClosedForNew, "the returned conn made room for the dial")
	assert.EqualValues(t, 1, s.Total)
	giveBack(t, r.c)
}

// TestMaxIdleEvictsTheLeastRecentlyUsedConnOfAnyAddress returns conns of
// several addresses into a pool with room for three idle conns.
func TestMaxIdleEvictsTheLeastRecentlyUsedConnOfAnyAddress(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 8, 0, connpool.WithMaxIdle(3))

	a := checkout(t, p, "a:1", 2)
	b := checkout(t, p, "b:1", 1)[0]
	c := checkout(t, p, "c:1", 1)[0]
	e := checkout(t, p, "e:1", 1)[0]
	giveBack(t, a[0], b, c) // LRU order: a0, b, c

	giveBack(t, e) // a0 is the least recently used, of another address
	assert.EqualValues(t, 1, d.Conns()[0].Closes.Load(), "a0 evicted")
	assert.EqualValues(t, 1, destination(p.Stats(), "a:1").ClosedIdleCapEvicted)
	assert.EqualValues(t, 3, p.Stats().Idle)

	// A Get takes b out of the LRU, so returning a1 evicts nothing.
	b2 := checkout(t, p, "b:1", 1)[0]
	assert.Equal(t, id(b), id(b2))
	giveBack(t, a[1]) // LRU: c, e, a1
	assert.EqualValues(t, 3, p.Stats().Idle)
	assert.EqualValues(t, 1, p.Stats().ClosedIdleCapEvicted)

	giveBack(t, b2) // evicts c
	s := p.Stats()
	assert.EqualValues(t, 1, destination(s, "c:1").ClosedIdleCapEvicted)
	assert.EqualValues(t, 0, destination(s, "c:1").Idle)
	assert.EqualValues(t, 3, s.Idle)
	assert.EqualValues(t, 3, d.Open())

	// An evicted address dials again.
	c2 := checkout(t, p, "c:1", 1)[0]
	assert.NotEqual(t, id(c), id(c2))
	giveBack(t, c2) // evicts e
	assert.EqualValues(t, 3, p.Stats().Idle)
	assert.EqualValues(t, 3, p.Stats().ClosedIdleCapEvicted) // a0, c and e
}

func TestMaxIdleEvictsWithinOneAddress(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 8, 0, connpool.WithMaxIdle(2))

	conns := checkout(t, p, "a:1", 3)
	giveBack(t, conns...)
	s := destination(p.Stats(), "a:1")
	assert.EqualValues(t, 2, s.Idle)
	assert.EqualValues(t, 1, s.ClosedIdleCapEvicted)
	// The oldest went; the newest is handed out first.
	c := checkout(t, p, "a:1", 1)[0]
	assert.Equal(t, id(conns[2]), id(c))
	assert.EqualValues(t, 1, d.Conns()[0].Closes.Load())
	giveBack(t, c)
}

// TestMaxIdleUnderConcurrency returns conns of many addresses at once and
// checks that the global cap holds and that no conn is lost or double closed.
func TestMaxIdleUnderConcurrency(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 4, 0, connpool.WithMaxIdle(5))

	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				addr := fmt.Sprintf("10.0.0.%d:80", (g+i)%7)
				c, err := p.Get(addr)
				if !assert.NoError(t, err) {
					return
				}
				assert.NoError(t, c.Close())
			}
		}()
	}
	wg.Wait()
	s := p.Stats()
	assert.LessOrEqual(t, s.Idle, int64(5))
	assert.Equal(t, d.Open(), s.Total)
	assert.Equal(t, s.Total, s.Idle)
	for _, fc := range d.Conns() {
		assert.LessOrEqual(t, fc.Closes.Load(), int64(1))
	}
}

func TestWarmDialsUntilTheAddressHasNIdleConns(t *testing.T) {
	d := testnet.NewCountingDialer()
	p := newPool(t, nil, 8, 0, connpool.WithMaxActive(6), connpool.WithDialContext(d.DialContext))

	require.NoError(t, p.Warm(context.Background(), "a:1", 3))
	assert.EqualValues(t, 3, destination(p.Stats(), "a:1").Idle)
	require.NoError(t, p.Warm(context.Background(), "a:1", 3))
	assert.EqualValues(t, 3, d.Dials(), "a warm address needs no dial")

	require.NoError(t, p.Warm(context.Background(), "a:1", 100))
	assert.EqualValues(t, 6, destination(p.Stats(), "a:1").Idle, "bounded by WithMaxActive")
	assert.LessOrEqual(t, d.MaxDialing(), int64(4), "at most four dials at a time")

	require.NoError(t, p.Warm(context.Background(), "b:1", 100))
	assert.EqualValues(t, 6, destination(p.Stats(), "b:1").Idle)

	assert.Error(t, p.Warm(context.Background(), "a:1", -1))
}

func TestWarmIsBoundedByCapacity(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 2, 0)
	require.NoError(t, p.Warm(context.Background(), "a:1", 10))
	assert.EqualValues(t, 2, destination(p.Stats(), "a:1").Idle)
	assert.EqualValues(t, 2, d.Dials())
}

func TestWarmReturnsDialErrorsCombined(t *testing.T) {
	d := testnet.NewCountingDialer()
	d.Refuse.Store(true)
	p := newPool(t, d.Dial, 8, 0)

	err := p.Warm(context.Background(), "a:1", 5)
	require.Error(t, err)
	var me interface{ WrappedErrors() []error }
	require.ErrorAs(t, err, &me)
	assert.Len(t, me.WrappedErrors(), 5, "one error per failed dial")
	assert.ErrorIs(t, err, testnet.ErrRefused)
	assert.ErrorContains(t, err, "a:1")
	assert.EqualValues(t, 5, d.Refused())
	assert.EqualValues(t, 0, destination(p.Stats(), "a:1").Total)
}

func TestWarmReturnsEarlyOnContextAndKeepsTheDials(t *testing.T) {
	d := testnet.NewCountingDialer()
	d.Gate = make(chan struct{})
	p := newPool(t, nil, 8, 0, connpool.WithDialContext(d.DialContext))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Warm(ctx, "a:1", 8) }()
	eventually(t, func() bool { return d.Dialing() == 4 }, "Warm should run four dials")
	cancel()
	err := <-done
	assert.ErrorIs(t, err, context.Canceled)

	for range 4 {
		d.Gate <- struct{}{}
	}
	eventually(t, func() bool { return destination(p.Stats(), "a:1").Idle == 4 },
		"the dials running when Warm returned should still reach the pool")
	assert.EqualValues(t, 4, d.Dials(), "no dial starts after the context ended")
}

func TestWarmOnAClosedPool(t *testing.T) {
	var d testnet.FakeDialer
	p, err := connpool.New(d.Dial, 8, 0)
	require.NoError(t, err)
	require.NoError(t, p.Close())
	assert.ErrorIs(t, p.Warm(context.Background(), "a:1", 2), connpool.ErrClosed)
	assert.True(t, errors.Is(p.Warm(context.Background(), "a:1", 0), connpool.ErrClosed))
}

// BenchmarkGetCloseAtLimit measures Get+Close with 64 goroutines contending
// for four conns of one address.
func BenchmarkGetCloseAtLimit(b *testing.B) {
	var d testnet.FakeDialer
	p, err := connpool.New(d.Dial, 4, time.Minute, connpool.WithMaxActive(4))
	require.NoError(b, err)
	defer p.Close()
	b.SetParallelism(32) // 64 goroutines on 2 cores
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, err := p.Get("a:1")
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
}
