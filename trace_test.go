package connpool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// traceLog records the events of a Trace, one line each, in the order the
// hooks ran.
type traceLog struct {
	mu     sync.Mutex
	events []string
}

func (l *traceLog) add(format string, args ...any) {
	l.mu.Lock()
	l.events = append(l.events, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

// take returns the events so far and forgets them.
func (l *traceLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.events
	l.events = nil
	return out
}

func outcome(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// trace returns a Trace whose every hook logs to l.
func (l *traceLog) trace() *connpool.Trace {
	return &connpool.Trace{
		DialStart: func(a string) { l.add("dial start %s", a) },
		DialDone: func(a string, _ time.Duration, err error) {
			l.add("dial done %s %s", a, outcome(err))
		},
		WaitStart: func(a string) { l.add("wait start %s", a) },
		WaitDone: func(a string, _ time.Duration, err error) {
			l.add("wait done %s %s", a, outcome(err))
		},
		GotConn: func(i connpool.GotConnInfo) {
			l.add("got %s reused=%t waited=%t", i.Address, i.Reused, i.WaitTime > 0)
		},
		PutConn:    func(a string) { l.add("put %s", a) },
		ConnClosed: func(a string, r connpool.CloseReason) { l.add("closed %s %s", a, r) },
		Retry:      func(a string, err error) { l.add("retry %s", a) },
	}
}

func TestTraceReportsEachEventOnceInOrder(t *testing.T) {
	var log traceLog
	d := &testnet.FakeDialer{}
	p := newPool(t, d.Dial, 1, time.Minute, connpool.WithMaxActive(2), connpool.WithTrace(log.trace()))

	c1, err := p.Get("a")
	require.NoError(t, err)
	assert.Equal(t, []string{"dial start a", "dial done a ok", "got a reused=false waited=false"}, log.take())

	c2, err := p.Get("a")
	require.NoError(t, err)
	log.take()
	require.NoError(t, c1.Close())
	assert.Equal(t, []string{"put a"}, log.take())
	require.NoError(t, c2.Close()) // capacity 1: closed
	assert.Equal(t, []string{"closed a bucket_full"}, log.take())

	c1, err = p.Get("a")
	require.NoError(t, err)
	assert.Equal(t, []string{"got a reused=true waited=false"}, log.take())
	c2, err = p.New("a")
	require.NoError(t, err)
	log.take()

	// At the limit, a Get waits, and is handed the conn returned next.
	got := make(chan net.Conn)
	go func() {
		c, err := p.Get("a")
		assert.NoError(t, err)
		got <- c
	}()
	eventually(t, func() bool { return p.Stats().Waiting == 1 }, "Get waits")
	require.NoError(t, c1.Close())
	c3 := <-got
	events := log.take()
	assert.ElementsMatch(t, []string{"wait start a", "put a", "wait done a ok", "got a reused=true waited=true"}, events)
	assert.Equal(t, []string{"wait start a", "wait done a ok", "got a reused=true waited=true"}, without(events, "put a"),
		"the waiter's events in order")

	require.NoError(t, c3.(*connpool.Conn).Release())
	assert.Equal(t, []string{"closed a released"}, log.take())
	require.NoError(t, c2.Close())
	log.take()
	require.NoError(t, p.Drain("a"))
	assert.Equal(t, []string{"closed a drained"}, log.take())

	c1, err = p.Get("b")
	require.NoError(t, err)
	require.NoError(t, c1.Close())
	log.take()
	require.NoError(t, p.Close())
	assert.Equal(t, []string{"closed b pool_closed"}, log.take())
}

// without returns events without the ones equal to drop.
func without(events []string, drop string) []string {
	var out []string
	for _, e := range events {
		if e != drop {
			out = append(out, e)
		}
	}
	return out
}

func TestTraceReportsFailedDialsAndWaits(t *testing.T) {
	var log traceLog
	refused := errors.New("refused")
	d := &testnet.FakeDialer{}
	dial := func(a string) (net.Conn, error) {
		if a == "down" {
			return nil, refused
		}
		return d.Dial(a)
	}
	p := newPool(t, dial, 1, time.Minute, connpool.WithMaxActive(1),
		connpool.WithWaitTimeout(time.Millisecond), connpool.WithTrace(log.trace()))

	_, err := p.Get("down")
	require.ErrorIs(t, err, refused)
	assert.Equal(t, []string{"dial start down", "dial done down error"}, log.take())

	c, err := p.Get("a")
	require.NoError(t, err)
	log.take()
	_, err = p.Get("a")
	require.ErrorIs(t, err, connpool.ErrExhausted)
	assert.Equal(t, []string{"wait start a", "wait done a error"}, log.take())

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = p.GetContext(ctx, "a")
	require.ErrorIs(t, err, context.Canceled)
	assert.Empty(t, log.take(), "a done context returns before any event")
	require.NoError(t, c.Close())
}

func TestTraceReportsWaitsAtMaxTotal(t *testing.T) {
	var log traceLog
	d := &testnet.FakeDialer{}
	p := newPool(t, d.Dial, 1, time.Minute, connpool.WithMaxTotal(1), connpool.WithTrace(log.trace()))
	c, err := p.Get("a")
	require.NoError(t, err)
	log.take()

	got := make(chan net.Conn)
	go func() {
		c, err := p.Get("b")
		assert.NoError(t, err)
		got <- c
	}()
	eventually(t, func() bool { return p.Stats().Waiting == 1 }, "Get waits at the cap")
	require.NoError(t, c.Close()) // closed for the waiter, whose slot frees
	c = <-got
	events := log.take()
	assert.ElementsMatch(t, []string{
		"wait start b", "closed a idle_cap_evicted", "wait done b ok",
		"dial start b", "dial done b ok", "got b reused=false waited=true",
	}, events)
	assert.Equal(t, []string{"wait start b", "wait done b ok", "dial start b", "dial done b ok", "got b reused=false waited=true"},
		without(events, "closed a idle_cap_evicted"))
	require.NoError(t, c.Close())
}

func TestTraceReportsRetriesOfDo(t *testing.T) {
	var log traceLog
	d := &testnet.FakeDialer{}
	p := newPool(t, d.Dial, 1, time.Minute, connpool.WithTrace(log.trace()))
	c, err := p.Get("a")
	require.NoError(t, err)
	require.NoError(t, c.Close())
	log.take()

	stale := io.EOF // the peer closed the reused conn
	calls := 0
	err = p.Do(context.Background(), "a", func(c *connpool.Conn) error {
		if calls++; calls == 1 {
			return stale
		}
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, []string{
		"got a reused=true waited=false", "closed a released", "retry a",
		"dial start a", "dial done a ok", "got a reused=false waited=false", "put a",
	}, log.take())
}

// TestTraceEventsMatchStatsUnderLoad runs checkouts of every kind from many
// goroutines and checks that the hooks saw each event exactly once: as
// many dials, reuses and closes by reason as Stats counted, and every
// dialed conn closed once by the end.
func TestTraceEventsMatchStatsUnderLoad(t *testing.T) {
	var (
		dialOK, dialErr, gotIdle, gotReused, gotNew, puts, waits, waitsDone atomic.Int64
		closed                                                              sync.Map // reason -> *atomic.Int64
	)
	count := func(r connpool.CloseReason) {
		v, _ := closed.LoadOrStore(r, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	closedFor := func(r connpool.CloseReason) int64 {
		if v, ok := closed.Load(r); ok {
			return v.(*atomic.Int64).Load()
		}
		return 0
	}
	tr := &connpool.Trace{
		DialDone: func(_ string, _ time.Duration, err error) {
			if err != nil {
				dialErr.Add(1)
			} else {
				dialOK.Add(1)
			}
		},
		WaitStart: func(string) { waits.Add(1) },
		WaitDone:  func(string, time.Duration, error) { waitsDone.Add(1) },
		GotConn: func(i connpool.GotConnInfo) {
			if i.WasIdle {
				gotIdle.Add(1)
			}
			if i.Reused {
				gotReused.Add(1)
			} else {
				gotNew.Add(1)
			}
		},
		PutConn:    func(string) { puts.Add(1) },
		ConnClosed: func(_ string, r connpool.CloseReason) { count(r) },
	}
	d := &testnet.FakeDialer{}
	var dials atomic.Int64
	dial := func(a string) (net.Conn, error) {
		if dials.Add(1)%7 == 0 {
			return nil, errors.New("refused")
		}
		return d.Dial(a)
	}
	p, err := connpool.New(dial, 2, 5*time.Millisecond, connpool.WithMaxActive(3), connpool.WithMaxIdle(4),
		connpool.WithWaitTimeout(2*time.Millisecond), connpool.WithTrace(tr))
	require.NoError(t, err)

	var wg sync.WaitGroup
	var checkouts atomic.Int64
	// One wait for certain, whatever the scheduling below: with a's three
	// slots held, a fourth Get waits out WithWaitTimeout.
	var held []net.Conn
	for range 3 {
		c, err := p.Get("a")
		require.NoError(t, err)
		checkouts.Add(1)
		held = append(held, c)
	}
	_, err = p.Get("a")
	require.Error(t, err, "a Get past WithMaxActive must wait and time out")
	for _, c := range held {
		require.NoError(t, c.Close())
	}
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			deadline := time.Now().Add(300 * time.Millisecond)
			for i := 0; i < 400 && time.Now().Before(deadline); i++ {
				addr := []string{"a", "b", "c"}[r.IntN(3)]
				get := p.Get
				if r.IntN(5) == 0 {
					get = p.New
				}
				c, err := get(addr)
				if err != nil {
					continue
				}
				checkouts.Add(1)
				switch r.IntN(6) {
				case 0:
					_ = c.(*connpool.Conn).Release()
				case 1:
					_ = p.Drain(addr)
					_ = c.Close()
				default:
					_ = c.Close()
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, p.Close())

	s := p.Stats()
	assert.Equal(t, s.Dials, dialOK.Load(), "successful dials")
	assert.Equal(t, s.DialErrors, dialErr.Load(), "failed dials")
	assert.Equal(t, s.Reuses, gotIdle.Load(), "reuses")
	assert.Equal(t, checkouts.Load(), gotReused.Load()+gotNew.Load(), "GotConn once per checkout")
	assert.Equal(t, waits.Load(), waitsDone.Load(), "every wait ends once")
	assert.Equal(t, s.WaitCount, waits.Load(), "waits (each checkout waits at one limit here)")
	for _, r := range connpool.CountedCloseReasons() {
		assert.Equal(t, s.Closed(r), closedFor(r), "closes for %s", r)
	}
	assert.Equal(t, s.ClosedBucketFull, s.Closed(connpool.CloseBucketFull))
	assert.Equal(t, s.Released, s.Closed(connpool.CloseReleased))
	assert.Zero(t, s.Closed(connpool.ClosePoolClosed))
	var allClosed int64
	closed.Range(func(_, v any) bool { allClosed += v.(*atomic.Int64).Load(); return true })
	assert.Equal(t, dialOK.Load(), allClosed, "every dialed conn closed once")
	assert.Zero(t, d.Open(), "every conn closed")
	assert.Positive(t, puts.Load())
	assert.Positive(t, waits.Load(), "the run waited at the limit")
	assert.Positive(t, s.ClosedIdleCapEvicted+s.ClosedBucketFull+s.ClosedDrained+s.Released, "the run closed conns")
}

// TestPanickingHookLeavesCountsRight makes each hook panic once, recovers
// the panic on the caller's goroutine, and checks that the pool's counts
// are right and it goes on working.
func TestPanickingHookLeavesCountsRight(t *testing.T) {
	mustPanic := func(t *testing.T, fn func()) {
		t.Helper()
		defer func() {
			require.Equal(t, "hook", recover(), "the hook's panic reaches the caller")
		}()
		fn()
	}
	// arm makes the next call of the hook set with set panic.
	type armed struct{ on atomic.Bool }
	boom := func(a *armed) {
		if a.on.CompareAndSwap(true, false) {
			panic("hook")
		}
	}

	t.Run("GotConn", func(t *testing.T) {
		var a armed
		d := &testnet.FakeDialer{}
		p := newPool(t, d.Dial, 1, time.Minute, connpool.WithMaxActive(1),
			connpool.WithTrace(&connpool.Trace{GotConn: func(connpool.GotConnInfo) { boom(&a) }}))
		a.on.Store(true)
		mustPanic(t, func() { _, _ = p.Get("a") })
		s := destination(p.Stats(), "a")
		assert.Equal(t, int64(1), s.Idle, "the conn went back to the pool")
		assert.Zero(t, s.InUse)
		c, err := p.Get("a") // the slot is free
		require.NoError(t, err)
		assert.True(t, c.(*connpool.Conn).Reused())
		require.NoError(t, c.Close())
	})

	t.Run("DialStart", func(t *testing.T) {
		var a armed
		d := &testnet.FakeDialer{}
		p := newPool(t, d.Dial, 1, time.Minute, connpool.WithMaxActive(1),
			connpool.WithTrace(&connpool.Trace{DialStart: func(string) { boom(&a) }}))
		a.on.Store(true)
		mustPanic(t, func() { _, _ = p.Get("a") })
		assert.Zero(t, d.Dials())
		// GetContext with a context that can end dials in a goroutine of
		// its own, where no caller could recover: the panic becomes the
		// dial's error.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		a.on.Store(true)
		_, err := p.GetContext(ctx, "a")
		require.ErrorIs(t, err, connpool.ErrDialPanicked)
		c, err := p.Get("a")
		require.NoError(t, err, "the slot is free")
		require.NoError(t, c.Close())
	})

	t.Run("DialDone", func(t *testing.T) {
		var a armed
		d := &testnet.FakeDialer{}
		p := newPool(t, d.Dial, 1, time.Minute, connpool.WithMaxActive(1),
			connpool.WithTrace(&connpool.Trace{DialDone: func(string, time.Duration, error) { boom(&a) }}))
		a.on.Store(true)
		mustPanic(t, func() { _, _ = p.Get("a") })
		assert.Equal(t, int64(1), d.Dials())
		assert.Zero(t, d.Open(), "the dialed conn was closed")
		assert.Zero(t, destination(p.Stats(), "a").Total)
		c, err := p.Get("a")
		require.NoError(t, err, "the slot is free")
		require.NoError(t, c.Close())
	})

	t.Run("WaitStart", func(t *testing.T) {
		var a armed
		d := &testnet.FakeDialer{}
		p := newPool(t, d.Dial, 1, time.Minute, connpool.WithMaxActive(1),
			connpool.WithTrace(&connpool.Trace{WaitStart: func(string) { boom(&a) }}))
		held, err := p.Get("a")
		require.NoError(t, err)
		a.on.Store(true)
		mustPanic(t, func() { _, _ = p.Get("a") })
		assert.Zero(t, p.Stats().Waiting, "the checkout left the line")
		require.NoError(t, held.Close())
		s := destination(p.Stats(), "a")
		assert.Equal(t, int64(1), s.Idle, "the conn went idle, not to a gone waiter")
		assert.Equal(t, int64(1), s.Total)
	})

	t.Run("WaitDone", func(t *testing.T) {
		var a armed
		d := &testnet.FakeDialer{}
		p := newPool(t, d.Dial, 1, time.Minute, connpool.WithMaxActive(1),
			connpool.WithTrace(&connpool.Trace{WaitDone: func(string, time.Duration, error) { boom(&a) }}))
		held, err := p.Get("a")
		require.NoError(t, err)
		a.on.Store(true)
		done := make(chan any)
		go func() {
			defer func() { done <- recover() }()
			_, _ = p.Get("a")
		}()
		eventually(t, func() bool { return p.Stats().Waiting == 1 }, "Get waits")
		require.NoError(t, held.Close())
		require.Equal(t, "hook", <-done)
		s := destination(p.Stats(), "a")
		assert.Equal(t, int64(1), s.Idle, "the handed-over conn went back to the pool")
		assert.Equal(t, int64(1), s.Total)
		c, err := p.Get("a")
		require.NoError(t, err)
		require.NoError(t, c.Close())
	})

	t.Run("WaitDoneAtMaxTotal", func(t *testing.T) {
		var a armed
		d := &testnet.FakeDialer{}
		p := newPool(t, d.Dial, 1, time.Minute, connpool.WithMaxTotal(1),
			connpool.WithTrace(&connpool.Trace{WaitDone: func(string, time.Duration, error) { boom(&a) }}))
		held, err := p.Get("a")
		require.NoError(t, err)
		a.on.Store(true)
		done := make(chan any)
		go func() {
			defer func() { done <- recover() }()
			_, _ = p.Get("b")
		}()
		eventually(t, func() bool { return p.Stats().Waiting == 1 }, "Get waits at the cap")
		require.NoError(t, held.Close())
		require.Equal(t, "hook", <-done)
		assert.Zero(t, p.Stats().Total)
		c, err := p.Get("b") // the cap's slot and b's reservation were given back
		require.NoError(t, err)
		require.NoError(t, c.Close())
	})

	t.Run("PutConnAndConnClosed", func(t *testing.T) {
		var put, closed armed
		d := &testnet.FakeDialer{}
		p := newPool(t, d.Dial, 1, time.Minute, connpool.WithTrace(&connpool.Trace{
			PutConn:    func(string) { boom(&put) },
			ConnClosed: func(string, connpool.CloseReason) { boom(&closed) },
		}))
		conns := checkout(t, p, "a", 2)
		put.on.Store(true)
		mustPanic(t, func() { _ = conns[0].Close() })
		closed.on.Store(true)
		mustPanic(t, func() { _ = conns[1].Close() })
		s := destination(p.Stats(), "a")
		assert.Equal(t, int64(1), s.Idle)
		assert.Equal(t, int64(1), s.Total)
		assert.Equal(t, int64(1), s.ClosedBucketFull)
		assert.Equal(t, int64(1), d.Open())
	})
}

func TestCloseReasonNames(t *testing.T) {
	names := map[string]bool{}
	for r := connpool.ClosePoolClosed; r <= connpool.CloseReleased; r++ {
		n := r.String()
		assert.NotEqual(t, "unknown", n)
		assert.Equal(t, strings.ToLower(n), n)
		assert.False(t, names[n], "%s named twice", n)
		names[n] = true
	}
	assert.Equal(t, "unknown", connpool.CloseReason(200).String())
}

// BenchmarkGetCloseTrace measures the hit path of one address with no
// Trace, with an empty one, and with every hook set to a function that
// does nothing.
func BenchmarkGetCloseTrace(b *testing.B) {
	noops := &connpool.Trace{
		DialStart:  func(string) {},
		DialDone:   func(string, time.Duration, error) {},
		WaitStart:  func(string) {},
		WaitDone:   func(string, time.Duration, error) {},
		GotConn:    func(connpool.GotConnInfo) {},
		PutConn:    func(string) {},
		ConnClosed: func(string, connpool.CloseReason) {},
		Retry:      func(string, error) {},
	}
	for _, tc := range []struct {
		name  string
		trace *connpool.Trace
	}{{"none", nil}, {"empty", &connpool.Trace{}}, {"noops", noops}} {
		b.Run("Trace="+tc.name+"/Serial", func(b *testing.B) {
			p := newBenchPool(b, []string{"a"}, time.Minute, connpool.WithTrace(tc.trace))
			b.ReportAllocs()
			for b.Loop() {
				c, err := p.Get("a")
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
		b.Run("Trace="+tc.name+"/Parallel", func(b *testing.B) {
			p := newBenchPool(b, []string{"a"}, time.Minute, connpool.WithTrace(tc.trace))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c, err := p.Get("a")
					if err != nil {
						b.Fatal(err)
					}
					c.Close()
				}
			})
		})
	}
}

// TestHooksRunOutsideLocks has every hook call back into the pool, which
// would deadlock if a hook ran under one of its locks, and blocks one
// address's hook while another address is served.
func TestHooksRunOutsideLocks(t *testing.T) {
	var p *connpool.Pool
	var calls atomic.Int64
	reenter := func() {
		calls.Add(1)
		_ = p.Stats()
	}
	release := make(chan struct{})
	blocked := make(chan struct{})
	tr := &connpool.Trace{
		DialStart: func(string) { reenter() },
		DialDone:  func(string, time.Duration, error) { reenter() },
		WaitStart: func(string) { reenter() },
		WaitDone:  func(string, time.Duration, error) { reenter() },
		GotConn: func(i connpool.GotConnInfo) {
			reenter()
			if i.Address == "slow" {
				close(blocked)
				<-release
			}
		},
		PutConn:    func(string) { reenter() },
		ConnClosed: func(string, connpool.CloseReason) { reenter() },
	}
	d := &testnet.FakeDialer{}
	p = newPool(t, d.Dial, 1, time.Minute, connpool.WithMaxActive(1), connpool.WithMaxIdle(1),
		connpool.WithWaitTimeout(time.Millisecond), connpool.WithTrace(tr))

	slow := make(chan net.Conn)
	go func() {
		c, err := p.Get("slow")
		assert.NoError(t, err)
		slow <- c
	}()
	<-blocked
	// The slow address's hook holds its goroutine; other addresses go on,
	// and so do the other hooks.
	for _, a := range []string{"a", "b", "a", "b"} { // the idle cap of 1 evicts
		c, err := p.Get(a)
		require.NoError(t, err)
		_, err = p.Get(a) // at the limit: waits, times out
		require.ErrorIs(t, err, connpool.ErrExhausted)
		require.NoError(t, c.Close())
	}
	c, err := p.Get("a")
	require.NoError(t, err)
	require.NoError(t, c.(*connpool.Conn).Release())
	close(release)
	require.NoError(t, (<-slow).Close())
	assert.Greater(t, calls.Load(), int64(20))
}

// TestEveryCloseCounterHasOneReason gives each Closed… counter and
// Released a value of its own and finds each, once, through the reasons.
func TestEveryCloseCounterHasOneReason(t *testing.T) {
	var c connpool.Counters
	v := reflect.ValueOf(&c).Elem()
	want := map[int64]string{}
	for i := range v.NumField() {
		name := v.Type().Field(i).Name
		if strings.HasPrefix(name, "Closed") || name == "Released" {
			v.Field(i).SetInt(int64(100 + i))
			want[int64(100+i)] = name
		}
	}
	got := map[int64]string{}
	for _, r := range connpool.CountedCloseReasons() {
		n := c.Closed(r)
		require.Contains(t, want, n, "%s reads no counter", r)
		require.NotContains(t, got, n, "%s and %s read one counter", r, got[n])
		got[n] = r.String()
	}
	assert.Len(t, got, len(want), "a counter no reason reads")
}
