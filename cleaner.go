package connpool

import "time"

// idleSweepInterval is how often the cleaner runs when idle conns never
// expire. It then only forgets addresses that have no conns left.
const idleSweepInterval = time.Minute

// sweepInterval returns how often the cleaner runs for an idle timeout and a
// max lifetime, either of which may be 0 for none. A quarter of the shorter
// closes an expired conn at most 1.25 × its limit after it expired, and
// bounds how much older than it is a conn returned on a quiet address may be
// judged (see bucket).
func sweepInterval(timeout, lifetime time.Duration) time.Duration {
	d := timeout
	if d == 0 || (lifetime > 0 && lifetime < d) {
		d = lifetime
	}
	if d == 0 {
		return idleSweepInterval
	}
	return max(d/4, time.Millisecond)
}

// runCleaner calls sweep every interval until the pool is closed.
func (p *Pool) runCleaner(interval time.Duration) {
	defer close(p.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.sweep(p.clock())
		}
	}
}

// sweep closes the idle conns that are expired at now or were evicted, and
// drops the buckets of addresses that have no conns, no dial in flight and
// nobody waiting. Their counters are
// kept in the pool-wide totals. now is a reading of p.clock; tests pass any
// value they like.
func (p *Pool) sweep(now int64) {
	var expired []discarded
	r := &p.buckets
	r.mu.Lock()
	dropped := false
	for _, b := range r.all {
		b.mu.Lock()
		exp, empty := b.sweepLocked(now)
		if empty {
			b.dropped = true
			r.removeLocked(b)
			dropped = true
		}
		b.mu.Unlock()
		if len(exp) > 0 {
			expired = append(expired, discarded{b, exp})
		}
	}
	if dropped {
		// Let go of the dropped buckets now rather than after the next
		// round of slow lookups.
		r.snapshotLocked()
	}
	for b := range r.draining {
		b.mu.Lock()
		r.forgetDrainedLocked(b) // once a dial in flight failed, say
		b.mu.Unlock()
	}
	r.mu.Unlock()

	// Outside every lock: closing a socket can block.
	for _, d := range expired {
		d.b.closeDiscarded(d.conns)
	}
}
