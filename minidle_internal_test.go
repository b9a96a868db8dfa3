package connpool

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/internal/testnet"
)

// newMinIdlePool returns a pool with WithMinIdle(minIdle) on a fake clock,
// with no idle timeout, so that only the test's calls of sweepAndWait
// top it up.
func newMinIdlePool(t *testing.T, dial Dial, capacity, minIdle int, opts ...Option) (*Pool, *fakeClock) {
	t.Helper()
	clock := new(fakeClock)
	clock.advance(time.Hour)
	p, err := New(dial, capacity, 0, append(opts, WithMinIdle(minIdle), withClock(clock))...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p, clock
}

// sweepAndWait runs one sweep, as the cleaner does, and waits for the
// top-up dials it started.
func sweepAndWait(p *Pool, clock *fakeClock) {
	p.sweep(clock.read())
	p.topUps.Wait()
}

// refusingDialer dials fake conns, or refuses while refuse is set; dials
// counts its calls.
type refusingDialer struct {
	refuse atomic.Bool
	dials  atomic.Int64
	d      testnet.FakeDialer
}

func (r *refusingDialer) Dial(address string) (net.Conn, error) {
	r.dials.Add(1)
	if r.refuse.Load() {
		return nil, errors.New("connection refused")
	}
	return r.d.Dial(address)
}

func destination(t *testing.T, p *Pool, address string) DestinationStats {
	t.Helper()
	for _, d := range p.Stats().Destinations {
		if d.Address == address {
			return d
		}
	}
	t.Fatalf("the pool does not know %s", address)
	return DestinationStats{}
}

// The server closes the three idle conns the pool keeps; the next sweep
// finds them dead and dials three live ones in their place.
func TestMinIdleReplacesIdleConnsTheServerClosed(t *testing.T) {
	srv := testnet.StartEcho(t)
	dial := func(address string) (net.Conn, error) { return net.Dial("tcp", address) }
	p, clock := newMinIdlePool(t, dial, 8, 3)
	c, err := p.Get(srv.Addr())
	require.NoError(t, err)
	require.NoError(t, c.Close())

	sweepAndWait(p, clock)
	require.EqualValues(t, 3, destination(t, p, srv.Addr()).Idle)
	require.Eventually(t, func() bool { return srv.Open() == 3 }, 10*time.Second, time.Millisecond)

	srv.CloseAll()
	require.Eventually(t, func() bool { return srv.Open() == 0 }, 10*time.Second, time.Millisecond)
	// Within two sweeps: the peer's close may still be on its way at the
	// first.
	for range 2 {
		sweepAndWait(p, clock)
		if destination(t, p, srv.Addr()).ClosedDeadWhileIdle == 3 {
			break
		}
	}
	d := destination(t, p, srv.Addr())
	assert.EqualValues(t, 3, d.ClosedDeadWhileIdle)
	assert.EqualValues(t, 3, d.Idle)
	assert.EqualValues(t, 3, d.Total)

	// The three are live: each answers a round trip.
	var held []net.Conn
	for range 3 {
		c, err := p.Get(srv.Addr())
		require.NoError(t, err)
		require.True(t, c.(*Conn).Reused())
		require.NoError(t, testnet.RoundTrip(c, "ping"))
		held = append(held, c)
	}
	for _, c := range held {
		require.NoError(t, c.Close())
	}
	assert.EqualValues(t, 6, p.Stats().Dials, "one by Get, two to top up to three, three to replace the dead")
}

// Against a backend that refuses every dial, the top-up backs off: over a
// second of sweeps every 10 ms, it dials a handful of times, not at every
// sweep. A successful dial ends the backoff.
func TestMinIdleBacksOffAfterDialErrors(t *testing.T) {
	var r refusingDialer
	r.refuse.Store(true)
	dials, refuse := &r.dials, &r.refuse
	p, clock := newMinIdlePool(t, r.Dial, 8, 3)
	_, err := p.Get("a:1")
	require.Error(t, err)
	dials.Store(0)

	for range 100 {
		clock.advance(10 * time.Millisecond)
		sweepAndWait(p, clock)
	}
	// Three dials fail at once (backoff 100, 200, 400 ms), then one more
	// after 400 ms (800 ms): at most 3 + 3 over the second, at least 3.
	assert.GreaterOrEqual(t, dials.Load(), int64(3))
	assert.LessOrEqual(t, dials.Load(), int64(6), "dials against a refusing backend in 1 s of 10 ms sweeps")
	assert.Zero(t, destination(t, p, "a:1").Idle)

	refuse.Store(false)
	clock.advance(topUpBackoffMax)
	sweepAndWait(p, clock)
	assert.EqualValues(t, 3, destination(t, p, "a:1").Idle)
	b := p.buckets.lookup("a:1")
	b.mu.Lock()
	assert.Zero(t, b.cold.topUpFailures)
	assert.Zero(t, b.cold.topUpAfter)
	b.mu.Unlock()
}

// Drain stops the top-up of its address and lets the cleaner forget it; the
// next Get for the address starts the top-up again.
func TestMinIdleStopsAtDrainUntilTheNextGet(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newMinIdlePool(t, d.Dial, 8, 2)
	c, err := p.Get("a:1")
	require.NoError(t, err)
	require.NoError(t, c.Close())
	sweepAndWait(p, clock)
	require.EqualValues(t, 2, destination(t, p, "a:1").Idle)

	require.NoError(t, p.Drain("a:1"))
	dials := d.Dials()
	sweepAndWait(p, clock)
	assert.Equal(t, dials, d.Dials(), "a drained address is not topped up")
	assert.Zero(t, knownAddrs(p), "the cleaner forgets a drained address")

	c, err = p.Get("a:1")
	require.NoError(t, err)
	require.NoError(t, c.Close())
	sweepAndWait(p, clock)
	assert.EqualValues(t, 2, destination(t, p, "a:1").Idle)

	// A Get between Drain and the next sweep starts the top-up again too.
	require.NoError(t, p.Drain("a:1"))
	c, err = p.Get("a:1")
	require.NoError(t, err)
	require.NoError(t, c.Close())
	sweepAndWait(p, clock)
	assert.EqualValues(t, 2, destination(t, p, "a:1").Idle)
}

// An address with no conns stays known while WithMinIdle tops it up.
func TestMinIdleKeepsAnAddressWithNoConns(t *testing.T) {
	var r refusingDialer
	r.refuse.Store(true)
	p, clock := newMinIdlePool(t, r.Dial, 8, 1)
	_, err := p.Get("a:1")
	require.Error(t, err)
	sweepAndWait(p, clock)
	sweepAndWait(p, clock)
	require.Equal(t, 1, knownAddrs(p))
	r.refuse.Store(false)
	clock.advance(topUpBackoffMax)
	sweepAndWait(p, clock)
	assert.EqualValues(t, 1, destination(t, p, "a:1").Idle)
}

// The minimum is bounded by WithMaxActive and by the capacity.
func TestMinIdleIsBoundedByMaxActiveAndCapacity(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		capacity, maxActive, min int
		want                     int64
	}{
		{"max active", 8, 2, 5, 2},
		{"capacity", 1, 0, 5, 1},
		{"neither", 8, 0, 5, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d testnet.FakeDialer
			p, clock := newMinIdlePool(t, d.Dial, tc.capacity, tc.min, WithMaxActive(tc.maxActive))
			c, err := p.Get("a:1")
			require.NoError(t, err)
			require.NoError(t, c.Close())
			for range 3 {
				sweepAndWait(p, clock)
			}
			s := destination(t, p, "a:1")
			assert.EqualValues(t, tc.want, s.Idle)
			assert.EqualValues(t, tc.want, s.Total)
			assert.EqualValues(t, tc.want, d.Dials(), "dials beyond the bound are wasted")
		})
	}
}

// Conns in use count against WithMaxActive: the top-up dials only into the
// free slots.
func TestMinIdleDialsOnlyIntoFreeSlots(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newMinIdlePool(t, d.Dial, 8, 2, WithMaxActive(2))
	held, err := p.Get("a:1")
	require.NoError(t, err)
	sweepAndWait(p, clock)
	s := destination(t, p, "a:1")
	assert.EqualValues(t, 1, s.Idle)
	assert.EqualValues(t, 2, s.Total)
	require.NoError(t, held.Close())
}

// Close cancels the top-up dials in flight; they end, and leave nothing
// behind.
func TestCloseCancelsTopUpDials(t *testing.T) {
	var block atomic.Bool
	started := make(chan struct{}, topUpParallel)
	ended := make(chan error, topUpParallel)
	var d testnet.FakeDialer
	dial := func(ctx context.Context, address string) (net.Conn, error) {
		if !block.Load() {
			return d.Dial(address)
		}
		started <- struct{}{}
		<-ctx.Done()
		ended <- ctx.Err()
		return nil, ctx.Err()
	}
	clock := new(fakeClock)
	p, err := New(nil, 8, 0, WithDialContext(dial), WithMinIdle(2), withClock(clock))
	require.NoError(t, err)
	c, err := p.Get("a:1")
	require.NoError(t, err)
	require.NoError(t, c.(*Conn).Release()) // the address is known, with no conn
	block.Store(true)
	p.sweep(clock.read()) // starts two top-up dials, which block
	<-started
	<-started
	require.NoError(t, p.Close())
	require.ErrorIs(t, <-ended, context.Canceled)
	require.ErrorIs(t, <-ended, context.Canceled)
	p.topUps.Wait()
	b := p.buckets.lookup("a:1")
	b.mu.Lock()
	defer b.mu.Unlock()
	assert.Zero(t, b.dialing)
	assert.Zero(t, b.total)
}

func TestMinIdleRejectsANegativeMinimum(t *testing.T) {
	var d testnet.FakeDialer
	_, err := New(d.Dial, 8, 0, WithMinIdle(-1))
	require.ErrorIs(t, err, ErrInvalidConfig)
	assert.Contains(t, err.Error(), "WithMinIdle(-1)")
}

// Regression: a conn the sweep listed as idle may be checked out before the
// liveness check runs; it then shows its holder's unread reply, and is
// returned clean before the dead ones are closed. It must not be closed as
// dead.
func TestMinIdleKeepsAConnCheckedOutDuringTheCheck(t *testing.T) {
	srv := testnet.StartEcho(t)
	dial := func(address string) (net.Conn, error) { return net.Dial("tcp", address) }
	p, clock := newMinIdlePool(t, dial, 8, 1)
	c, err := p.Get(srv.Addr())
	require.NoError(t, err)
	require.NoError(t, c.Close())
	b := p.buckets.lookup(srv.Addr())

	b.mu.Lock()
	probes := b.probesLocked() // the sweep lists the idle conn...
	b.mu.Unlock()
	require.Len(t, probes.idle, 1)

	c, err = p.Get(srv.Addr()) // ...a caller takes it and sends a request...
	require.NoError(t, err)
	_, err = c.Write([]byte("ping\n"))
	require.NoError(t, err)
	var dead []idleConn
	require.Eventually(t, func() bool { // ...the check sees the unread reply...
		dead = probes.dead()
		return len(dead) == 1
	}, 10*time.Second, time.Millisecond)
	reply := make([]byte, 5) // ...the caller reads it and returns the conn clean
	_, err = io.ReadFull(c, reply)
	require.NoError(t, err)
	require.NoError(t, c.Close())

	p.replenish(b, clock.read(), probes, dead)
	p.topUps.Wait()
	d := destination(t, p, srv.Addr())
	assert.Zero(t, d.ClosedDeadWhileIdle)
	assert.EqualValues(t, 1, d.Idle)
	c, err = p.Get(srv.Addr())
	require.NoError(t, err)
	assert.True(t, c.(*Conn).Reused())
	require.NoError(t, testnet.RoundTrip(c, "pong"))
	require.NoError(t, c.Close())
}

// Regression: with WithMaxIdle(1) over two addresses, each sweep's top-up
// of the address without a conn evicted the other's, which the next sweep
// dialed again: a dial and a close at every sweep while nothing was used.
func TestMinIdleStaysWithinTheIdleCap(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newMinIdlePool(t, d.Dial, 8, 1, WithMaxIdle(1))
	for _, a := range []string{"a:1", "b:1"} {
		c, err := p.Get(a)
		require.NoError(t, err)
		require.NoError(t, c.Close())
	}
	dials := d.Dials()
	for range 10 {
		sweepAndWait(p, clock)
	}
	s := p.Stats()
	assert.Equal(t, dials, d.Dials(), "top-up dials at the idle cap")
	assert.EqualValues(t, 1, s.Idle)
}

// Regression: with a capacity of 0 no conn is ever idle, so WithMinIdle has
// nothing to keep; it kept every address the pool saw all the same.
func TestMinIdleIsOffWithCapacityZero(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newMinIdlePool(t, d.Dial, 0, 2)
	c, err := p.Get("a:1")
	require.NoError(t, err)
	require.NoError(t, c.Close())
	sweepAndWait(p, clock)
	assert.Zero(t, knownAddrs(p))
	assert.EqualValues(t, 1, d.Dials())
}

// Regression: SpendRetry for an address that was drained and forgotten
// made a new bucket, which WithMinIdle then kept and topped up: the
// retired backend was dialed again.
func TestMinIdleDoesNotReviveADrainedAddressLookedUpBySpendRetry(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newMinIdlePool(t, d.Dial, 8, 2)
	c, err := p.Get("a:1")
	require.NoError(t, err)
	require.NoError(t, c.Close())
	require.NoError(t, p.Drain("a:1"))
	sweepAndWait(p, clock)
	require.Zero(t, knownAddrs(p))

	dials := d.Dials()
	p.SpendRetry("a:1")
	sweepAndWait(p, clock)
	sweepAndWait(p, clock)
	assert.Equal(t, dials, d.Dials())
	assert.Zero(t, knownAddrs(p))
}

// Close cancels top-up dials but does not wait for them, as for Warm's: a
// dial function without a context cannot be cancelled, and Close returns
// all the same. The dial's conn is closed once it returns.
func TestCloseDoesNotWaitForATopUpDialThatIgnoresItsContext(t *testing.T) {
	var block atomic.Bool
	started := make(chan struct{}, topUpParallel)
	release := make(chan struct{})
	var d testnet.FakeDialer
	dial := func(address string) (net.Conn, error) {
		if block.Load() {
			started <- struct{}{}
			<-release
		}
		return d.Dial(address)
	}
	clock := new(fakeClock)
	p, err := New(dial, 8, 0, WithMinIdle(1), withClock(clock))
	require.NoError(t, err)
	c, err := p.Get("a:1")
	require.NoError(t, err)
	require.NoError(t, c.(*Conn).Release())
	block.Store(true)
	p.sweep(clock.read())
	<-started
	require.NoError(t, p.Close())
	close(release)
	p.topUps.Wait()
	assert.Zero(t, d.Open(), "the conn of a top-up dial that ended after Close was not closed")
}
