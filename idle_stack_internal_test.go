package connpool

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/internal/testnet"
)

// bucketOf returns the live bucket of address.
func bucketOf(p *Pool, address string) *bucket { return p.buckets.lookup(address) }

// checkIdleLocked fails t unless b's idle conns keep the invariants written
// in the bucket's comment. The caller holds b.mu.
func checkIdleLocked(t testing.TB, b *bucket) {
	t.Helper()
	if err := idleInvariantsLocked(b); err != nil {
		t.Fatal(err)
	}
}

// idleInvariantsLocked returns the first broken invariant of b's idle
// conns: at most the capacity, no more than total, each a distinct open
// conn with its own info, stamps non-decreasing from the oldest up, and no
// conn left in the array past the stack's length. The caller holds b.mu.
func idleInvariantsLocked(b *bucket) error {
	idle := b.idleCopyLocked()
	if len(idle) > b.pool.capacity {
		return fmt.Errorf("%s: %d idle > capacity %d", b.address, len(idle), b.pool.capacity)
	}
	if int(b.total) < len(idle) {
		return fmt.Errorf("%s: total %d < idle %d", b.address, b.total, len(idle))
	}
	seen := map[*pconn]bool{}
	for i, ic := range idle {
		switch {
		case ic.pc == nil:
			return fmt.Errorf("%s: nil pc at %d of %d", b.address, i, len(idle))
		case seen[ic.pc]:
			return fmt.Errorf("%s: a conn twice in the idle stack", b.address)
		case i > 0 && idle[i-1].since > ic.since:
			return fmt.Errorf("%s: stamps decrease at %d: %d > %d", b.address, i, idle[i-1].since, ic.since)
		case ic.info != ic.pc.info:
			return fmt.Errorf("%s: info is not pc.info at %d", b.address, i)
		}
		seen[ic.pc] = true
	}
	s := b.stackLocked()
	for i, ic := range s[len(s):cap(s)] {
		if ic.pc != nil {
			return fmt.Errorf("%s: a conn left past the stack's length at %d (len %d, cap %d)", b.address, len(s)+i, len(s), cap(s))
		}
	}
	return nil
}

// TestCountersWrapThroughCheckouts drives reuses and dials across the 32-bit
// wrap through the public paths, with a validator that rejects conns on
// demand (unreuse), and checks Counters and takesLocked at every step.
func TestCountersWrapThroughCheckouts(t *testing.T) {
	var d testnet.FakeDialer
	var reject atomic.Bool
	clock := new(fakeClock)
	clock.advance(time.Hour)
	p, err := New(d.Dial, 4, time.Hour, withClock(clock),
		WithValidator(func(net.Conn) error {
			if reject.Load() {
				return errors.New("no")
			}
			return nil
		}, 0))
	require.NoError(t, err)
	defer p.Close()

	const addr = "a:1"
	c, err := p.Get(addr)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	b := bucketOf(p, addr)

	for _, start := range []uint32{math.MaxUint32 - 2, math.MaxUint32 - 1, math.MaxUint32, 0} {
		b.mu.Lock()
		b.reuses = start
		b.dials = start
		b.coldLocked().counters.Reuses, b.cold.counters.Dials = 5<<32, 7<<32
		b.mu.Unlock()
		wantReuses := int64(5<<32) + int64(start)
		wantDials := int64(7<<32) + int64(start)
		lastTakes := int64(-1)
		check := func(step string) {
			t.Helper()
			b.mu.Lock()
			cs := b.countersLocked()
			takes := b.takesLocked()
			b.mu.Unlock()
			assert.Equal(t, wantReuses, cs.Reuses, "%d %s reuses", start, step)
			assert.Equal(t, wantDials, cs.Dials, "%d %s dials", start, step)
			if takes < lastTakes {
				t.Errorf("%d %s: takes decreased %d -> %d", start, step, lastTakes, takes)
			}
			lastTakes = takes
		}
		check("start")
		for range 6 {
			// Plain reuse.
			c, err := p.Get(addr)
			require.NoError(t, err)
			wantReuses++
			check("reuse")
			require.NoError(t, c.Close())
			// A rejected reuse: unreuse takes the reuse back, then a dial.
			reject.Store(true)
			c, err = p.Get(addr)
			reject.Store(false)
			require.NoError(t, err)
			wantDials++
			check("rejected")
			require.NoError(t, c.Close())
		}
		// Stats agrees.
		s := p.Stats()
		assert.Equal(t, wantReuses, s.Reuses)
		assert.Equal(t, wantDials, s.Dials)
	}
}

// TestIdleStackShapes walks the idle stack through nil, empty-with-capacity
// and full shapes: sweep emptying it, Drain, New at the limit, LRU
// eviction, a checkout that times out waiting, Pool.Close. Every dialed
// conn must be closed exactly once at the end, and no conn ever
// duplicated.
func TestIdleStackShapes(t *testing.T) {
	var d testnet.FakeDialer
	clock := new(fakeClock)
	clock.advance(time.Hour)
	p, err := New(d.Dial, 3, time.Minute, withClock(clock), WithMaxActive(3), WithMaxIdle(5))
	require.NoError(t, err)

	const addr = "a:1"
	check := func() {
		t.Helper()
		p.buckets.mu.Lock()
		p.buckets.eachLocked(func(b *bucket) {
			b.mu.Lock()
			checkIdleLocked(t, b)
			b.mu.Unlock()
		})
		p.buckets.mu.Unlock()
	}
	get3 := func(a string) []net.Conn {
		var cs []net.Conn
		for range 3 {
			c, err := p.Get(a)
			require.NoError(t, err)
			cs = append(cs, c)
		}
		return cs
	}
	put := func(cs []net.Conn) {
		for _, c := range cs {
			require.NoError(t, c.Close())
			clock.advance(time.Second)
			check()
		}
	}
	for round := range 3 {
		cs := get3(addr)
		put(cs)
		// All idle expire: sweep empties the stack, leaving capacity.
		clock.advance(2 * time.Minute)
		p.sweep(clock.now.Load())
		check()
		b := bucketOf(p, addr)
		b.mu.Lock()
		assert.Equal(t, 0, b.idleLenLocked(), "round %d", round)
		b.mu.Unlock()
		// Refill, then Drain: stack pointer dropped.
		cs = get3(addr)
		put(cs)
		require.NoError(t, p.Drain(addr))
		check()
		// Refill after the drain.
		cs = get3(addr)
		put(cs)
		// New at the limit with idle conns: the oldest goes.
		cs = get3(addr)
		put(cs[:2])
		n, err := p.New(addr)
		require.NoError(t, err)
		check()
		put([]net.Conn{n, cs[2]})
		// LRU eviction across addresses.
		put(get3("b:1"))
		put(get3("c:1"))
		check()
		// A checkout that times out waiting at the limit.
		cs = get3(addr)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		_, err = p.GetContext(ctx, addr)
		cancel()
		require.Error(t, err)
		put(cs)
		p.closers.Wait()
		check()
	}
	require.NoError(t, p.Close())
	p.closers.Wait()
	for _, fc := range d.Conns() {
		assert.EqualValues(t, 1, fc.Closes.Load(), "conn %d closed once", fc.ID)
	}
	assert.Zero(t, d.Open())
}

// TestAbandonedHandOffAtAFullStackIsClosed: a conn handed to a waiter that
// gave up meanwhile goes back through putLocked; with the address's idle
// stack full and more conns open than its capacity, it is closed, not
// stacked past the capacity.
func TestAbandonedHandOffAtAFullStackIsClosed(t *testing.T) {
	d := &rvDialer{}
	p, err := New(nil, 1, time.Minute, withValueDial(d.dial), WithMaxActive(3))
	require.NoError(t, err)
	defer p.Close()

	cs := checkoutN(t, p, "a", 3)
	b := p.buckets.lookup("a")
	// A blocked idle value fills the stack and serves no waiter.
	blocked := make(chan struct{})
	defer close(blocked)
	cs[0].load().v.(*rvValue).unblocked = blocked
	require.NoError(t, cs[0].Close())
	lockedIdle(t, b, func() { require.Equal(t, 1, b.idleLenLocked()) })

	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { _, err := p.checkout(ctx, "a", false); res <- err }()
	rvEventually(t, func() bool { return rvWaiting(b) == 1 }, "waiter queued")
	rvEventually(t, func() bool { return rvGoroutines("connpool.(*Pool).wait(", "[select") == 1 }, "parked")

	// The waiter gives up while a Close hands it a conn: the Close's
	// putLocked runs under the lock that the giving up waits for.
	b.mu.Lock()
	cancel()
	rvEventually(t, func() bool { return rvGoroutines("(*bucket).giveUp(") == 1 }, "gives up")
	c := cs[1]
	pc := (*pconn)(c.pc)
	c.pc = nil
	toClose, victim := b.putLocked(pc, c.info)
	require.Empty(t, toClose, "handed to the waiter")
	require.Nil(t, victim)
	require.Zero(t, b.waitingLocked(), "delivered")
	b.mu.Unlock()
	require.ErrorIs(t, <-res, context.Canceled)
	p.closers.Wait()

	lockedIdle(t, b, func() {
		assert.Equal(t, 1, b.idleLenLocked())
		assert.EqualValues(t, 2, b.total)
		assert.EqualValues(t, 1, b.countersLocked().ClosedBucketFull, "the abandoned hand-off is closed")
	})
	require.NoError(t, cs[2].Close())
	lockedIdle(t, b, func() {
		assert.Equal(t, 1, b.idleLenLocked())
		assert.EqualValues(t, 2, b.countersLocked().ClosedBucketFull)
	})
}

// TestLastLeaseAtAFullStackIsClosed: in shared mode the last lease of a
// value puts it back through putLocked; with the stack full it is closed.
// A value ended with ReleaseNow leaves the stack as it is.
func TestLastLeaseAtAFullStackIsClosed(t *testing.T) {
	d := &rvDialer{}
	p, err := New(nil, 1, time.Minute, withValueDial(d.dial), withShares(1))
	require.NoError(t, err)
	defer p.Close()

	cs := checkoutN(t, p, "a", 3)
	for _, c := range cs {
		require.True(t, c.has(sharedBit))
	}
	b := p.buckets.lookup("a")
	for i, c := range cs {
		require.NoError(t, c.Close())
		lockedIdle(t, b, func() {
			assert.Equal(t, 1, b.idleLenLocked())
			assert.EqualValues(t, 3-i, b.total)
			assert.EqualValues(t, i, b.countersLocked().ClosedBucketFull)
		})
	}
	c1, err := p.checkout(context.Background(), "a", false)
	require.NoError(t, err)
	c2, err := p.checkout(context.Background(), "a", false)
	require.NoError(t, err)
	require.NoError(t, c2.release(true))
	require.NoError(t, c1.Close())
	lockedIdle(t, b, func() {
		assert.Equal(t, 1, b.idleLenLocked())
		assert.EqualValues(t, 1, b.total)
	})
}

// checkoutN checks out n values of address from p.
func checkoutN(t *testing.T, p *Pool, address string, n int) []*Conn {
	t.Helper()
	var cs []*Conn
	for range n {
		c, err := p.checkout(context.Background(), address, false)
		require.NoError(t, err)
		cs = append(cs, c)
	}
	return cs
}

// lockedIdle runs f under b.mu after checking b's idle invariants.
func lockedIdle(t *testing.T, b *bucket, f func()) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	checkIdleLocked(t, b)
	f()
}
