package connpool

import (
	"errors"
	"net"
	"sync"
)

// errBucketDropped tells a caller that the cleaner dropped the bucket it
// holds. The caller looks the address up again, which creates a new bucket.
var errBucketDropped = errors.New("connpool: bug: dropped bucket escaped")

// idleConn is a conn resting in a bucket.
type idleConn struct {
	nc    net.Conn
	since int64 // a clock reading no later than the moment nc was returned
}

// bucket is the per-address store of a [Pool]: a LIFO stack of idle conns
// plus the counts of everything bound to the address.
//
// Idle stamps come from b.now, the latest clock reading the pool took for
// this address (by Get, a dial or the cleaner), rather than from a clock read
// in Close. That keeps Close free of a clock read on the hot path. A stamp is
// never later than the real return time, so the age computed from it is never
// too small: a conn is never kept past the timeout, though one returned after
// a long hold on an otherwise quiet address may be judged up to one sweep
// interval older than it is.
type bucket struct {
	address string
	pool    *Pool

	mu sync.Mutex // protects the fields below

	// idle is a stack; idle[len(idle)-1] is the most recently returned conn.
	// Invariants:
	//   - len(idle) <= pool.capacity;
	//   - since is non-decreasing from idle[0] to the top (stamps are taken
	//     from now, which never decreases), so expired conns form a prefix;
	//   - once the pool is closed, idle is empty and stays empty.
	idle []idleConn

	// total counts open conns bound to address: idle plus in use.
	// Invariant: total >= len(idle).
	total int

	// dialing counts dials in flight for address. A bucket with dials in
	// flight is never dropped.
	dialing int

	// now is the latest clock reading seen for this bucket. It never
	// decreases.
	now int64

	// dropped is set when the cleaner removes the bucket from the pool's map.
	// A dropped bucket has no conns and accepts none.
	dropped bool

	// handles is a batch of unused Conn handles, carved one per checkout.
	// Allocating handles in batches rather than one by one takes most of
	// the allocator's cost off the hit path. A handle is never reused, so
	// every checkout still gets a distinct one; the price is that a live
	// handle keeps its batch (handleBatch × 32 bytes) in memory.
	handles []Conn

	counters Counters
}

// handleBatch is how many Conn handles a bucket allocates at once.
const handleBatch = 16

// newConnLocked returns a fresh handle for nc.
func (b *bucket) newConnLocked(nc net.Conn) *Conn {
	if len(b.handles) == 0 {
		b.handles = make([]Conn, handleBatch)
	}
	c := &b.handles[0]
	b.handles = b.handles[1:]
	c.nc = nc
	c.b = b
	return c
}

// get pops the most recently returned conn if it has been idle less than the
// pool's timeout at now. Otherwise it takes every expired idle conn out (the
// caller closes them after the lock is released), reserves a dial, and
// returns a nil conn.
func (b *bucket) get(now int64) (c *Conn, expired []idleConn, err error) {
	b.mu.Lock()
	if b.dropped {
		b.mu.Unlock()
		return nil, nil, errBucketDropped
	}
	if b.pool.closed.Load() {
		b.mu.Unlock()
		return nil, nil, ErrClosed
	}
	if now > b.now {
		b.now = now
	}
	if n := len(b.idle); n > 0 {
		top := b.idle[n-1]
		if timeout := b.pool.timeout; timeout == 0 || now-top.since < timeout {
			b.idle[n-1] = idleConn{}
			b.idle = b.idle[:n-1]
			b.counters.Reuses++
			c = b.newConnLocked(top.nc)
			b.mu.Unlock()
			return c, nil, nil
		}
		// The top is the newest conn, so all of them have expired.
		expired = b.idle
		b.idle = nil
		b.total -= len(expired)
		b.counters.ClosedIdleTimeout += int64(len(expired))
	}
	b.dialing++
	b.mu.Unlock()
	return nil, expired, nil
}

// reserveDial records a dial about to start, so the bucket is not dropped
// while it runs.
func (b *bucket) reserveDial() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped {
		return errBucketDropped
	}
	if b.pool.closed.Load() {
		return ErrClosed
	}
	b.dialing++
	return nil
}

// dialFailed ends a reserved dial that failed.
func (b *bucket) dialFailed() {
	b.mu.Lock()
	b.dialing--
	b.counters.DialErrors++
	b.mu.Unlock()
}

// dialed ends a reserved dial that succeeded and binds the new conn to the
// bucket. It returns ErrClosed if the pool was closed meanwhile; the caller
// then closes the conn.
func (b *bucket) dialed(now int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dialing--
	b.counters.Dials++
	if now > b.now {
		b.now = now
	}
	if b.pool.closed.Load() {
		return ErrClosed
	}
	b.total++
	return nil
}

// put takes back a conn whose holder called Close. It keeps the conn if the
// pool is open and the stack has room, and closes it otherwise.
func (b *bucket) put(nc net.Conn) error {
	b.mu.Lock()
	if !b.pool.closed.Load() && len(b.idle) < b.pool.capacity {
		b.idle = append(b.idle, idleConn{nc: nc, since: b.now})
		b.mu.Unlock()
		return nil
	}
	b.total--
	if !b.pool.closed.Load() {
		b.counters.ClosedBucketFull++
	}
	b.checkLocked()
	b.mu.Unlock()
	return nc.Close()
}

// release forgets a conn whose holder called Release, and closes it.
func (b *bucket) release(nc net.Conn) error {
	b.mu.Lock()
	b.total--
	b.counters.Released++
	b.checkLocked()
	b.mu.Unlock()
	return nc.Close()
}

// sweepLocked advances the bucket's clock to now and takes out the idle conns
// that have been idle for timeout or longer; the caller closes them after
// releasing every lock. It reports whether the bucket is empty: no idle
// conns, none in use and no dial in flight.
func (b *bucket) sweepLocked(now, timeout int64) (expired []idleConn, empty bool) {
	if now > b.now {
		b.now = now
	}
	if timeout > 0 {
		n := 0
		for n < len(b.idle) && now-b.idle[n].since >= timeout {
			n++
		}
		if n > 0 {
			expired = append(expired, b.idle[:n]...)
			rest := copy(b.idle, b.idle[n:])
			clear(b.idle[rest:])
			b.idle = b.idle[:rest]
			b.total -= n
			b.counters.ClosedIdleTimeout += int64(n)
		}
	}
	b.checkLocked()
	return expired, len(b.idle) == 0 && b.total == 0 && b.dialing == 0
}

// drain takes out every idle conn when the pool closes.
func (b *bucket) drain() []idleConn {
	b.mu.Lock()
	defer b.mu.Unlock()
	idle := b.idle
	b.idle = nil
	b.total -= len(idle)
	b.checkLocked()
	return idle
}

// statsLocked reports the bucket's counts.
func (b *bucket) statsLocked() DestinationStats {
	return DestinationStats{
		Address:  b.address,
		Total:    int64(b.total),
		Idle:     int64(len(b.idle)),
		InUse:    int64(b.total - len(b.idle)),
		Counters: b.counters,
	}
}

// checkLocked panics if the counts contradict each other, rather than let a
// miscount spread.
func (b *bucket) checkLocked() {
	if b.total < len(b.idle) || b.dialing < 0 {
		panic("connpool: bug: bucket " + b.address + " counts are inconsistent")
	}
}
