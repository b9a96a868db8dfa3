package connpool

import (
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

// Bug A. A checkout that queued at the WithMaxActive limit before a Drain is
// granted a slot after it, in the new generation; its conn goes idle with
// bucket.topUp false. Every later Get takes the fast path (no LRU), which
// never sets topUp, so the top-up never resumes although the address is
// used after the Drain ("Drain stops its top-up until the next Get").
func TestMinIdleTopUpResumesAfterDrainWhenAWaiterDials(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newMinIdlePool(t, d.Dial, 8, 2, WithMaxActive(2))
	c1, err := p.Get("a:1")
	require.NoError(t, err)
	c2, err := p.Get("a:1")
	require.NoError(t, err)

	got := make(chan net.Conn, 1)
	go func() { // queues at the limit, before the Drain
		c, err := p.Get("a:1")
		if err != nil {
			panic(err)
		}
		got <- c
	}()
	require.Eventually(t, func() bool { return destination(t, p, "a:1").Waiting == 1 }, 10*time.Second, time.Millisecond)

	require.NoError(t, p.Drain("a:1")) // e.g. to recycle conns; checkouts keep going
	require.NoError(t, c1.Close())     // closed as drained: its slot goes to the waiter, which dials
	c3 := <-got
	require.NoError(t, c3.Close()) // pooled: new generation

	// The address is used after the Drain, the ordinary way.
	for range 3 {
		c, err := p.Get("a:1")
		require.NoError(t, err)
		require.NoError(t, c.Close())
	}
	require.NoError(t, c2.Close()) // closed as drained

	for range 3 {
		clock.advance(minIdleSweepInterval)
		sweepAndWait(p, clock)
	}
	dst := destination(t, p, "a:1")
	t.Logf("idle %d total %d dials %d", dst.Idle, dst.Total, d.Dials())
	assert.EqualValues(t, 2, dst.Idle, "address used by Gets after Drain is not topped up to WithMinIdle(2)")
}

// Bug L. The reuses guard of replenish assumes reuses only grows while a
// conn of the probes is checked out. But unreuse decrements it: a checkout
// that popped another conn before the sweep listed the probes, and whose
// validator (or liveness check) fails after, takes back its reuse, so the
// count is back to the listed value although a probed conn was checked out,
// showed its holder's unread reply to the check, and was returned clean.
// The healthy conn is then closed as dead: the bug of fix (6) is back.
func TestMinIdleKeepsAHealthyConnAfterADiscardedCheckout(t *testing.T) {
	srv := testnet.StartEcho(t)
	dial := func(address string) (net.Conn, error) { return net.Dial("tcp", address) }
	var badLocal net.Addr
	validating := make(chan struct{})
	fail := make(chan struct{})
	validator := func(nc net.Conn) error {
		if badLocal != nil && nc.LocalAddr().String() == badLocal.String() {
			close(validating)
			<-fail                           // a slow ping...
			return errors.New("ping failed") // ...that fails
		}
		return nil
	}
	p, clock := newMinIdlePool(t, dial, 8, 1, WithValidator(validator, 0))
	x, err := p.Get(srv.Addr())
	require.NoError(t, err)
	y, err := p.Get(srv.Addr())
	require.NoError(t, err)
	xLocal := x.LocalAddr()
	badLocal = y.LocalAddr()
	require.NoError(t, x.Close())
	require.NoError(t, y.Close()) // stack: [x, y], y on top
	b := p.buckets.lookup(srv.Addr())

	// Checkout 1 pops y (reuses+1) and validates it, slowly.
	first := make(chan net.Conn, 1)
	go func() {
		c, err := p.Get(srv.Addr())
		if err != nil {
			panic(err)
		}
		first <- c
	}()
	<-validating

	b.mu.Lock()
	probes := b.probesLocked() // the sweep lists x, the idle conn, and the reuse count
	b.mu.Unlock()
	require.Len(t, probes.idle, 1)

	c, err := p.Get(srv.Addr()) // checkout 2 takes x and sends a request
	require.NoError(t, err)
	require.Equal(t, xLocal.String(), c.LocalAddr().String())
	_, err = c.Write([]byte("ping\n"))
	require.NoError(t, err)
	var dead []idleConn
	require.Eventually(t, func() bool { // the check sees the unread reply
		dead = probes.dead()
		return len(dead) == 1
	}, 10*time.Second, time.Millisecond)

	close(fail) // checkout 1's validator fails: unreuse takes its reuse back; it dials
	c1 := <-first
	reply := make([]byte, 5) // checkout 2 reads its reply and returns x clean
	_, err = io.ReadFull(c, reply)
	require.NoError(t, err)
	require.NoError(t, c.Close())

	p.replenish(b, clock.read(), probes, dead)
	p.topUps.Wait()
	dst := destination(t, p, srv.Addr())
	t.Logf("reuses now %d, takes listed %d; ClosedDeadWhileIdle %d", dst.Reuses, probes.takes, dst.ClosedDeadWhileIdle)
	assert.Zero(t, dst.ClosedDeadWhileIdle, "a healthy conn returned clean was closed as dead")
	require.NoError(t, c1.Close())
}

// Bug (1) survives with a conn in use: WithMaxIdle(1), WithMinIdle(1), one
// address whose one conn is checked out when the sweep runs (a busy
// address). reserveTopUpLocked counts only idle conns and top-up dials
// against the cap (minidle.go:125), not the conns in use that come back; so
// each sweep dials a conn, and the return of the busy conn evicts it. A dial
// and a close at every sweep, forever, for an address that needs one conn.
func TestMinIdleCountsConnsInUseUnderTheIdleCap(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newMinIdlePool(t, d.Dial, 8, 1, WithMaxIdle(1))
	c, err := p.Get("a:1")
	require.NoError(t, err)
	require.NoError(t, c.Close())
	before := d.Dials()
	const rounds = 10
	for range rounds {
		c, err := p.Get("a:1") // the request in flight at the sweep
		require.NoError(t, err)
		clock.advance(minIdleSweepInterval)
		sweepAndWait(p, clock)
		require.NoError(t, c.Close())
	}
	s := p.Stats()
	t.Logf("dials in %d sweeps: %d; ClosedIdleCapEvicted %d; idle %d", rounds, d.Dials()-before, s.ClosedIdleCapEvicted, s.Idle)
	assert.LessOrEqual(t, d.Dials()-before, int64(1), "a top-up dial at every sweep, each evicted by the returning conn")
}

// Fix (6)'s guard compares the bucket's reuse count, not the conn: any
// checkout of the address between the sweep's listing and replenish skips
// closing every dead conn of the address. On a busy address (a checkout in
// every such window; here one per sweep), a dead conn at the bottom of the
// LIFO stack, which Get never reaches, stays forever (no idle timeout) and
// counts toward the minimum, so it is never replaced either: the next
// burst finds it dead at checkout. The sweep is replayed step by step as
// sweepBuckets runs it (cleaner.go:99-107).
func TestMinIdleRemovesADeadConnOnABusyAddress(t *testing.T) {
	dying := testnet.StartEcho(t)
	alive := testnet.StartEcho(t)
	var n atomic.Int64
	dial := func(string) (net.Conn, error) { // the address's first conn goes to the backend that dies
		if n.Add(1) == 1 {
			return net.Dial("tcp", dying.Addr())
		}
		return net.Dial("tcp", alive.Addr())
	}
	p, clock := newMinIdlePool(t, dial, 8, 2)
	x, err := p.Get("a:1")
	require.NoError(t, err)
	h, err := p.Get("a:1")
	require.NoError(t, err)
	require.NoError(t, x.Close())
	require.NoError(t, h.Close()) // stack [x, h]
	dying.CloseAll()
	require.Eventually(t, func() bool { return dying.Open() == 0 }, 10*time.Second, time.Millisecond)
	b := p.buckets.lookup("a:1")

	for range 20 {
		clock.advance(minIdleSweepInterval)
		now := clock.read()
		b.mu.Lock()
		expired := b.sweepLocked(now)
		probes := b.probesLocked()
		b.mu.Unlock()
		_ = b.closeDiscarded(expired)
		c, err := p.Get("a:1") // the address's traffic: one request
		require.NoError(t, err)
		require.NoError(t, testnet.RoundTrip(c, "ping"))
		require.NoError(t, c.Close())
		p.topUp(b, now, probes)
		p.topUps.Wait()
	}
	dst := destination(t, p, "a:1")
	t.Logf("after 20 sweeps: ClosedDeadWhileIdle %d, idle %d", dst.ClosedDeadWhileIdle, dst.Idle)
	// A burst of two: the second checkout finds the dead conn.
	c1, err := p.Get("a:1")
	require.NoError(t, err)
	c2, err := p.Get("a:1")
	require.NoError(t, err)
	dst = destination(t, p, "a:1")
	assert.Zero(t, dst.ClosedDeadAtCheckout, "WithMinIdle kept a dead conn for 20 sweeps")
	assert.EqualValues(t, 1, dst.ClosedDeadWhileIdle)
	require.NoError(t, c1.Close())
	require.NoError(t, c2.Close())
}
