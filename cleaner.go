package connpool

import "time"

// idleSweepInterval is how often the cleaner runs when idle conns never
// expire. It then only forgets addresses that have no conns left.
const idleSweepInterval = time.Minute

// sweepChunk is how many buckets a sweep visits per hold of the registry's
// lock. Between chunks the lock is free, so a Get of a new address waits
// for at most one chunk, not for a whole sweep.
const sweepChunk = 256

// sweepInterval returns how often the cleaner runs for an idle timeout and a
// max lifetime, either of which may be 0 for none. A quarter of the shorter
// closes an expired conn at most 1.25 × its limit after it was returned.
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

// runCleaner renews the coarse clock every tick, sweeps every sweepEvery
// ticks and, with leak detection, looks for leaked conns every tick, until
// the pool is closed. It counts ticks rather than
// compare readings so that a test's fake clock never sets off a sweep.
func (p *Pool) runCleaner(tick time.Duration, sweepEvery int) {
	defer close(p.done)
	t := time.NewTicker(tick)
	defer t.Stop()
	for ticks := 1; ; ticks++ {
		select {
		case <-p.stop:
			return
		case <-t.C:
			now := p.readClock()
			if ticks%sweepEvery == 0 {
				p.sweep(now)
			}
			if p.leaks != nil {
				p.leaks.scan(now)
			}
		}
	}
}

// sweep closes the idle conns that are expired at now or were evicted, and
// drops the buckets of addresses that have no conns, no dial in flight and
// nobody waiting. Their counters are kept in the pool-wide totals. now is a
// reading of p.clock; tests pass any value they like.
//
// The sweep reads the registry's snapshot, which needs no lock, and the
// buckets added since it was cut. It visits them in chunks, each bucket
// under its own lock alone, and takes the registry's lock only to drop a
// chunk's empty buckets, so a Get of a new address never waits for a whole
// sweep. Buckets added meanwhile are visited by the next sweep.
func (p *Pool) sweep(now int64) {
	snapshot, added := p.buckets.sweepList()
	chunk := make([]*bucket, 0, sweepChunk)
	visit := func(b *bucket) {
		chunk = append(chunk, b)
		if len(chunk) == sweepChunk {
			p.sweepBuckets(now, chunk)
			chunk = chunk[:0]
		}
	}
	if snapshot != nil {
		snapshot.each(visit)
	}
	for _, b := range added {
		visit(b)
	}
	p.sweepBuckets(now, chunk)
}

// sweepBuckets sweeps each bucket under its own lock, closes what expired
// outside every lock, and then drops the buckets left empty. The caller
// holds no lock.
func (p *Pool) sweepBuckets(now int64, buckets []*bucket) {
	var empty []*bucket
	for _, b := range buckets {
		b.mu.Lock()
		if b.dropped {
			b.mu.Unlock()
			continue
		}
		expired := b.sweepLocked(now)
		idle := b.total == 0 && b.dialing == 0 && b.waitingLocked() == 0 && !b.keptLocked()
		var probes idleProbes
		if p.minIdle > 0 {
			probes = b.probesLocked()
		}
		b.mu.Unlock()
		_ = b.closeDiscarded(expired) // nobody to report an expired conn's close error to
		if p.minIdle > 0 && !idle {
			p.topUp(b, now, probes)
		}
		if idle {
			empty = append(empty, b)
		}
	}
	if len(empty) == 0 {
		return
	}
	r := &p.buckets
	r.mu.Lock()
	dropped := 0
	for _, b := range empty {
		b.mu.Lock()
		if r.dropLocked(b) {
			dropped++
		}
		b.mu.Unlock()
	}
	r.missedLocked(dropped)
	r.mu.Unlock()
}
