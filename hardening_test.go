package connpool_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// oneProc runs the rest of the test with GOMAXPROCS 1, so that a goroutine
// the test wakes runs only once the test blocks. It makes the order of a
// wake-up and the test's next steps deterministic.
func oneProc(t *testing.T) {
	t.Helper()
	prev := runtime.GOMAXPROCS(1)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

// Regression: Warm returned the error value its still-running dials kept
// appending to, so the error changed (and raced) after Warm returned.
func TestWarmErrorDoesNotChangeAfterWarmReturns(t *testing.T) {
	d := testnet.NewCountingDialer()
	d.Gate = make(chan struct{})
	d.Refuse.Store(true)
	p := newPool(t, nil, 8, 0, connpool.WithDialContext(func(_ context.Context, address string) (net.Conn, error) {
		// Without the caller's cancellation, as the pool gives it.
		return d.DialContext(context.Background(), address)
	}))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Warm(ctx, "a:1", 4) }()
	eventually(t, func() bool { return d.Dialing() == 4 }, "4 dials in flight, have %d", d.Dialing())
	cancel()
	err := <-done
	require.ErrorIs(t, err, context.Canceled)
	text := err.Error()

	close(d.Gate) // the four dials now fail
	eventually(t, func() bool { return p.Stats().DialErrors == 4 }, "the dials end")
	assert.Equal(t, text, err.Error(), "the returned error must not change")
	assert.NotErrorIs(t, err, testnet.ErrRefused, "dials that failed after Warm returned are not in its error")
}

// Regression: New at a WithMaxActive cap skipped the idle conns and waited
// for a slot they held until they expired: forever, without a timeout.
func TestNewAtMaxActiveClosesTheOldestIdleConnToDial(t *testing.T) {
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 8, 0, connpool.WithMaxActive(2), connpool.WithWaitTimeout(2*time.Second))

	conns := checkout(t, p, "a:1", 2)
	giveBack(t, conns[0], conns[1]) // conns[0] is the oldest idle conn
	c, err := p.New("a:1")
	require.NoError(t, err, "New must not wait for idle conns to expire")
	defer c.Close()
	assert.Equal(t, "fake-3", id(c), "a fresh dial")
	assert.EqualValues(t, 1, d.Conns()[0].Closes.Load(), "the oldest idle conn made room")
	assert.EqualValues(t, 0, d.Conns()[1].Closes.Load())
	s := p.Stats()
	assert.EqualValues(t, 1, s.ClosedForNew)
	assert.EqualValues(t, 2, s.Total)
	assert.EqualValues(t, 2, d.Open())
}

// Regression: a dial function that panicked on Get's goroutine left its
// reserved slot counted forever.
func TestPanickingDialOnGetFreesItsSlot(t *testing.T) {
	var d testnet.FakeDialer
	var calls atomic.Int64
	dial := func(address string) (net.Conn, error) {
		if calls.Add(1) == 1 {
			panic("dial exploded")
		}
		return d.Dial(address)
	}
	p := newPool(t, dial, 8, 0, connpool.WithMaxActive(1), connpool.WithWaitTimeout(2*time.Second))

	assert.PanicsWithValue(t, "dial exploded", func() { _, _ = p.Get("a:1") }, "the panic reaches the caller")
	c, err := p.Get("a:1")
	require.NoError(t, err, "the slot of the panicked dial must be free")
	require.NoError(t, c.Close())
	assert.EqualValues(t, 1, p.Stats().DialErrors)
}

// Regression: a validator that panicked left its conn open and counted.
func TestPanickingValidatorClosesItsConn(t *testing.T) {
	var d testnet.FakeDialer
	validate := func(net.Conn) error { panic("validator exploded") }
	p := newPool(t, d.Dial, 8, 0, connpool.WithValidator(validate, 0))

	giveBack(t, checkout(t, p, "a:1", 1)...)
	assert.PanicsWithValue(t, "validator exploded", func() { _, _ = p.Get("a:1") })
	assert.EqualValues(t, 1, d.Conns()[0].Closes.Load(), "the conn is closed")
	assert.EqualValues(t, 0, d.Open())
	s := p.Stats()
	assert.EqualValues(t, 0, s.Total, "and no longer counted")
	assert.EqualValues(t, 1, s.ClosedValidatorFailed)
}

// Regression: a dial function that panicked in a goroutine of the pool's
// own (GetContext, NewContext, Warm) crashed the process.
func TestPanickingDialInAPoolGoroutineBecomesADialError(t *testing.T) {
	dial := func(context.Context, string) (net.Conn, error) { panic("dial exploded") }
	p := newPool(t, nil, 8, 0, connpool.WithDialContext(dial))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for name, checkout := range map[string]func() (net.Conn, error){
		"GetContext": func() (net.Conn, error) { return p.GetContext(ctx, "a:1") },
		"NewContext": func() (net.Conn, error) { return p.NewContext(ctx, "a:1") },
	} {
		_, err := checkout()
		var de *connpool.DialError
		require.ErrorAs(t, err, &de, name)
		assert.Equal(t, "a:1", de.Address, name)
		assert.ErrorIs(t, err, connpool.ErrDialPanicked, name)
		assert.Contains(t, err.Error(), "dial exploded", name)
	}
	err := p.Warm(ctx, "a:1", 2)
	assert.ErrorIs(t, err, connpool.ErrDialPanicked)
	assert.Contains(t, err.Error(), "dial exploded")
	s := p.Stats()
	assert.EqualValues(t, 4, s.DialErrors)
	assert.EqualValues(t, 0, s.Total)
}

// Regression: Drain moved waiters to a fresh bucket while the drained
// bucket's conns stayed open, so more sockets than WithMaxActive allows
// existed at once.
func TestDrainKeepsWithMaxActiveForConnsFromBeforeIt(t *testing.T) {
	d := testnet.NewCountingDialer()
	p := newPool(t, d.Dial, 8, 0, connpool.WithMaxActive(1))

	held := checkout(t, p, "a:1", 1)[0]
	got := goGet(func() (net.Conn, error) { return p.Get("a:1") })
	waitForWaiters(t, p, "a:1", 1)
	require.NoError(t, p.Drain("a:1"))
	assert.EqualValues(t, 1, destination(p.Stats(), "a:1").Waiting, "the waiter stays in line")

	giveBack(t, held) // closed as drained; its slot goes to the waiter
	r := <-got
	require.NoError(t, r.err)
	assert.NotEqual(t, id(held), id(r.c), "the drained conn is not handed on")
	giveBack(t, r.c)
	assert.EqualValues(t, 1, d.MaxLive(), "never more sockets than WithMaxActive(1)")
	assert.EqualValues(t, 1, p.Stats().ClosedDrained)
}

// Regression: a waiter woken by Drain added its wait to counters that were
// already folded into the pool-wide totals, so the totals lost it.
func TestWaitTimeSurvivesADrain(t *testing.T) {
	oneProc(t)
	var d testnet.FakeDialer
	p := newPool(t, d.Dial, 8, 0, connpool.WithMaxActive(1))

	held := checkout(t, p, "a:1", 1)[0]
	got := goGet(func() (net.Conn, error) { return p.Get("a:1") })
	waitForWaiters(t, p, "a:1", 1)
	require.NoError(t, p.Drain("a:1"))
	giveBack(t, held)
	r := <-got
	require.NoError(t, r.err)
	giveBack(t, r.c)

	s := p.Stats()
	assert.EqualValues(t, 1, s.WaitCount)
	assert.Positive(t, s.WaitDuration, "the wait is in the totals")
}

// Regression: a waiter granted a slot just as Pool.Close began still dialed
// (49 runs of 50).
func TestWaiterGrantedASlotAsPoolCloseBeginsDoesNotDial(t *testing.T) {
	oneProc(t)
	var d testnet.FakeDialer
	p, err := connpool.New(d.Dial, 8, 0, connpool.WithMaxActive(1))
	require.NoError(t, err)

	held := checkout(t, p, "a:1", 1)[0]
	got := goGet(func() (net.Conn, error) { return p.Get("a:1") })
	waitForWaiters(t, p, "a:1", 1)
	require.NoError(t, held.(*connpool.Conn).Release()) // grants the slot to the waiter
	require.NoError(t, p.Close())                       // before the waiter runs
	r := <-got
	assert.ErrorIs(t, r.err, connpool.ErrClosed)
	assert.Nil(t, r.c)
	assert.EqualValues(t, 1, d.Dials(), "no dial after Close began")
	assert.EqualValues(t, 0, d.Open())
}

// payloadConn is a fake conn carrying a buffer, as a socket carries its
// read and write buffers.
type payloadConn struct {
	testnet.FakeConn
	payload []byte
}

// Regression: a live handle kept its whole batch of handles reachable, and
// with them up to 15 released sockets and their buffers.
func TestEndedHandlesKeepNoSocketReachable(t *testing.T) {
	var collected atomic.Int64
	dial := func(address string) (net.Conn, error) {
		c := &payloadConn{FakeConn: testnet.FakeConn{Address: address}, payload: make([]byte, 64<<10)}
		runtime.AddCleanup(c, func(*atomic.Int64) { collected.Add(1) }, &collected)
		return c, nil
	}
	p := newPool(t, dial, 8, 0)

	// Handles are carved from batches; one kept handle keeps its batch.
	conns := checkout(t, p, "a:1", 16)
	keep := conns[7]
	var others []net.Conn
	for i, c := range conns {
		switch {
		case i == 7:
		case i%2 == 0:
			require.NoError(t, c.(*connpool.Conn).Release())
			others = append(others, c)
		default:
			require.NoError(t, c.Close())
			others = append(others, c)
		}
	}
	require.NoError(t, p.Drain("a:1")) // closes the returned conns too
	eventually(t, func() bool {
		runtime.GC()
		return collected.Load() == 15
	}, "15 closed sockets must be collectable while one handle lives; %d were", collected.Load())
	assert.Equal(t, "a:1", keep.RemoteAddr().String())
	require.NoError(t, keep.Close())
	for _, c := range others {
		assert.Equal(t, "a:1", c.RemoteAddr().String(), "an ended handle still tells its addresses")
	}
}

// Regression: a nil or zero-value *Pool failed with a nil dereference deep
// inside the pool.
func TestPoolUsedWithoutNewPanicsWithAClearMessage(t *testing.T) {
	const want = "connpool: Pool used without New (nil or zero-value *Pool)"
	ctx := context.Background()
	done, cancel := context.WithCancel(ctx)
	cancel()
	ok := func(*connpool.Conn) error { return nil }
	for name, p := range map[string]*connpool.Pool{"nil": nil, "zero": {}} {
		for op, call := range map[string]func(){
			"Do":               func() { _ = p.Do(ctx, "a:1", ok) },
			"Do, done ctx":     func() { _ = p.Do(done, "a:1", ok) },
			"Do, nil fn":       func() { _ = p.Do(ctx, "a:1", nil) },
			"GetContext, done": func() { _, _ = p.GetContext(done, "a:1") },
			"Get":              func() { _, _ = p.Get("a:1") },
			"GetContext":       func() { _, _ = p.GetContext(ctx, "a:1") },
			"New":              func() { _, _ = p.New("a:1") },
			"NewContext":       func() { _, _ = p.NewContext(ctx, "a:1") },
			"Warm":             func() { _ = p.Warm(ctx, "a:1", 1) },
			"Drain":            func() { _ = p.Drain("a:1") },
			"Stats":            func() { _ = p.Stats() },
			"Close":            func() { _ = p.Close() },
		} {
			assert.PanicsWithValue(t, want, call, "%s pool: %s", name, op)
		}
	}
}

// Regression: a dial function that ends its goroutine with runtime.Goexit (as
// t.FailNow and require.* do) in a pool goroutine is neither a return nor a
// panic: dialConnRecovered's recover sees nil and the goroutine ends without
// giving the slot back. On Get (the caller's goroutine) dialFor's deferred
// flag frees the slot; in GetContext's detached dial it is lost for good, so
// the address stays at its WithMaxActive cap forever.
func TestDialCallingGoexitInAPoolGoroutineFreesItsSlot(t *testing.T) {
	var d testnet.FakeDialer
	var calls atomic.Int64
	p := newPool(t, nil, 4, 0,
		connpool.WithMaxActive(1), connpool.WithWaitTimeout(200*time.Millisecond),
		connpool.WithDialContext(func(_ context.Context, address string) (net.Conn, error) {
			if calls.Add(1) == 1 {
				runtime.Goexit()
			}
			return d.Dial(address)
		}))

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := p.GetContext(ctx, "a:1")
	require.Error(t, err)

	c, err := p.Get("a:1")
	if err == nil {
		_ = c.Close()
	}
	assert.False(t, errors.Is(err, connpool.ErrExhausted),
		"the slot of the dial that called Goexit was never given back: %v", err)
}

// Regression: "A checkout never waits on a socket's Close" and "when the context
// ends while they wait ..., they return ctx.Err() at once". A GetContext
// whose context ends in the same instant a conn is handed to it puts that
// conn back (abandonLocked -> putLocked); with WithMaxIdle that can evict the
// idle conn of another address, and giveUp closes that victim inline
// (victim.b.evict), so the checkout blocks on a socket's Close.
func TestGivingUpNeverClosesAnotherAddressesConnInline(t *testing.T) {
	oneProc(t)
	gate := make(chan struct{})
	var d testnet.FakeDialer
	d.OnClose = func(c *testnet.FakeConn) {
		if c.Address == "b:1" {
			<-gate // a slow socket Close
		}
	}
	p := newPool(t, d.Dial, 4, 0, connpool.WithMaxActive(1), connpool.WithMaxIdle(1))
	defer close(gate) // before p.Close (deferred in newPool's cleanup) needs it

	other, err := p.Get("b:1")
	require.NoError(t, err)
	require.NoError(t, other.Close()) // the one idle conn the LRU allows

	held, err := p.Get("a:1")
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan error, 1)
	go func() {
		c, err := p.GetContext(ctx, "a:1")
		if err == nil {
			_ = c.Close()
		}
		got <- err
	}()
	// Let the checkout queue as a waiter (it is at the cap).
	deadline := time.Now().Add(10 * time.Second)
	for p.Stats().Waiting != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the checkout never waited")
		}
		time.Sleep(time.Millisecond)
	}

	// With one P, the waiter runs only once this goroutine blocks: its
	// context ends, and then, before it runs, the held conn is handed to it.
	cancel()
	require.NoError(t, held.Close())

	select {
	case err := <-got:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(2 * time.Second):
		t.Fatal("GetContext did not return after its context ended: it is closing another address's socket inline")
	}
}

// Regression: a Warm called after Drain returned counts the warming dials of
// the drained generation, which Drain has already doomed, as its own. It
// dials nothing and returns nil, and once those dials end (and are closed
// as drained) the address has no idle conn at all. Before the generation
// change, Drain removed the bucket and such a Warm dialed its n conns.
func TestWarmAfterDrainDialsForTheNewGeneration(t *testing.T) {
	d := testnet.NewCountingDialer()
	d.Gate = make(chan struct{})
	p := newPool(t, nil, 8, 0, connpool.WithDialContext(func(_ context.Context, address string) (net.Conn, error) {
		return d.DialContext(context.Background(), address)
	}))

	// A first Warm, whose two dials are held at the gate.
	first := make(chan error, 1)
	go func() { first <- p.Warm(context.Background(), "a:1", 2) }()
	eventually(t, func() bool { return d.Dialing() == 2 }, "2 dials in flight, have %d", d.Dialing())

	// The backend is retired and comes back (a balancer Update removing and
	// re-adding it); the new Warm must give it 2 conns of the new generation.
	require.NoError(t, p.Drain("a:1"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	second := make(chan error, 1)
	go func() { second <- p.Warm(ctx, "a:1", 2) }()

	// Let every dial through, the old ones and any new one.
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case d.Gate <- struct{}{}:
			case <-stop:
				return
			}
		}
	}()
	defer close(stop)

	for _, ch := range []chan error{first, second} {
		select {
		case err := <-ch:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("Warm hung")
		}
	}
	eventually(t, func() bool { return d.Dialing() == 0 && p.Stats().ClosedDrained == 2 },
		"the two old dials end and are closed as drained")
	s := p.Stats()
	t.Logf("dials %d, drained %d, idle %d", d.Dials(), s.ClosedDrained, s.Idle)
	assert.EqualValues(t, 2, s.Idle,
		"Warm(a:1, 2) called after Drain returned nil, yet the address has %d idle conns", s.Idle)
}
