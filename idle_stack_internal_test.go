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
// eviction, a waiter's hand-back, Pool.Close. Every dialed conn must be
// closed exactly once at the end, and no conn ever duplicated.
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
		// A waiter that gives up after a hand-off.
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
