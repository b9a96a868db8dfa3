package connpool

import (
	"context"
	"io"
	"slices"
	"time"
)

// WithMinIdle keeps at least n idle conns ready at every address the pool
// has seen and not drained, as HikariCP's minimumIdle does: the first
// requests after a quiet spell, or after the backend closed the idle conns,
// find conns already dialed. n is bounded by the capacity and by
// [WithMaxActive]. The default is 0, none; a negative n is rejected by
// [New].
//
// The cleaner does the work at each sweep, in the background: it checks
// the address's idle conns with the liveness check (one non-blocking peek
// each, outside every lock) and closes the dead ones (counted in
// ClosedDeadWhileIdle), then dials what is missing, at most four dials at
// a time across the pool. The idle timeout and max lifetime still retire
// conns, and the next sweep replaces them. After a failed dial the address
// is not topped up again for a backoff that starts at 100 ms and doubles
// up to 30 s; a successful dial ends it. With WithMinIdle the cleaner
// sweeps at least every 5 seconds. Put a timeout in the dial function: a
// dial to a backend that never answers holds one of the four top-up dials
// until it fails.
//
// With [WithMaxIdle], the top-up never takes the pool past its idle cap:
// it dials only while the pool has room under the cap, and counts an
// address's conns in use toward its n, since they return to the idle list;
// so with a cap below n times the addresses in use, some addresses keep
// fewer than n.
//
// An address that was used (by Get, New or Warm) stays known, and topped
// up, while it has no conns; [Pool.Drain] stops its top-up until the next
// Get, New or Warm for it, and lets the cleaner forget it. [Pool.Close]
// cancels the top-up dials through the context of [WithDialContext] and
// does not wait for them: a dial that ignores its context finishes in the
// background, and its conn is closed.
func WithMinIdle(n int) Option {
	return func(o *options) { o.minIdle = n }
}

const (
	// topUpParallel is how many top-up dials the pool runs at once.
	topUpParallel = warmParallel

	// minIdleSweepInterval is the longest interval between sweeps of a
	// pool with WithMinIdle.
	minIdleSweepInterval = 5 * time.Second

	// topUpBackoffMin and topUpBackoffMax bound the wait after a failed
	// top-up dial.
	topUpBackoffMin = 100 * time.Millisecond
	topUpBackoffMax = 30 * time.Second
)

// idleProbes are the idle conns of a bucket that the liveness check applies
// to, as a sweep found them; and the bucket's clock and count of taken conns
// then.
type idleProbes struct {
	idle  []idleConn
	now   int64 // b.now
	takes int64 // see takesLocked
}

// topUp keeps the address of b at its minimum of idle conns; the cleaner
// calls it after sweeping b, holding no lock. A conn of probes found dead
// is closed if it stayed idle since the sweep listed it: a conn that was
// checked out meanwhile may have shown its holder's unread reply, and waits
// for the next sweep. It stayed idle if no checkout took an idle conn of
// the address since, or if it is still idle with a stamp older than the
// sweep's clock (a conn returned since is stamped no earlier than that).
// Then dials are started for what is missing.
func (p *Pool) topUp(b *bucket, now int64, probes idleProbes) {
	p.replenish(b, now, probes, probes.dead())
}

// dead runs the liveness check on the conns of probes, holding no lock, and
// returns those that failed it.
func (probes idleProbes) dead() []idleConn {
	var dead []idleConn
	for _, ic := range probes.idle {
		if ic.pc.probe.check(ic.pc.v) != nil {
			dead = append(dead, ic)
		}
	}
	return dead
}

// replenish closes the dead conns of probes, as topUp says, and starts the
// dials the address is short of.
func (p *Pool) replenish(b *bucket, now int64, probes idleProbes, dead []idleConn) {
	var toClose []io.Closer
	b.mu.Lock()
	untouched := b.takesLocked() == probes.takes
	for _, d := range dead {
		i := slices.IndexFunc(b.idleLocked(), func(ic idleConn) bool { return ic.pc == d.pc })
		if i >= 0 && (untouched || (b.stackLocked()[i].since == d.since && d.since < probes.now)) {
			toClose = b.removeIdleLocked(toClose, i, CloseDeadWhileIdle)
		}
	}
	for {
		gen, ok := b.reserveTopUpLocked(now)
		if !ok {
			break
		}
		p.topUps.Add(1)
		go p.topUpOne(b, gen)
	}
	b.mu.Unlock()
	_ = b.closeDiscarded(toClose) // a dead conn's close error goes nowhere
}

// topUpOne runs one top-up dial reserved with reserveTopUpLocked, then
// frees its place among the pool's top-up dials.
func (p *Pool) topUpOne(b *bucket, gen uint32) {
	defer p.topUps.Done()
	defer func() { <-p.topUpSem }()
	err := exitedDial(b.address)
	defer func() { b.topUpDone(err) }() // deferred: a dial may call runtime.Goexit
	err = p.warmOne(context.Background(), b, gen)
}

// reserveTopUpLocked reserves a slot and a place among the pool's top-up
// dials for one dial, if the address is short of its minimum, has a free
// slot and is not backing off. The caller holds b.mu.
func (b *bucket) reserveTopUpLocked(now int64) (gen uint32, ok bool) {
	p := b.pool
	if b.dropped || p.closed.Load() || !b.hasSlotLocked() {
		return 0, false
	}
	cold := b.coldLocked()
	have := b.idleLenLocked()
	idleCap := p.lru != nil && p.lru.max != noIdleCap
	if idleCap {
		have = int(b.total) // conns in use come back to the idle list, where a top-up conn would evict one
	}
	if !b.keptLocked() || now < cold.topUpAfter || have+b.warmingLocked() >= p.minIdle {
		return 0, false
	}
	if idleCap && p.lru.len()+len(p.topUpSem) >= p.lru.max {
		// A conn dialed now would evict another idle one: the pool is at
		// its idle cap, counting the top-up dials in flight. (Only the
		// cleaner reserves top-ups, so the count cannot grow meanwhile.)
		return 0, false
	}
	select {
	case p.topUpSem <- struct{}{}:
	default:
		return 0, false // enough dials run already; the next sweep tries again
	}
	b.dialing++
	cold.warming++
	return cold.gen, true
}

// topUpDone records the outcome of a top-up dial: a failure makes the
// address back off, twice as long as the failure before; a success ends
// the backoff.
func (b *bucket) topUpDone(err error) {
	now := b.pool.readClock()
	b.mu.Lock()
	defer b.mu.Unlock()
	cold := b.coldLocked()
	switch {
	case err == nil:
		cold.topUpFailures = 0
		cold.topUpAfter = 0
	case err != ErrClosed && err != errAtMaxTotal:
		cold.topUpFailures = min(cold.topUpFailures+1, 16)
		backoff := min(topUpBackoffMin<<(cold.topUpFailures-1), topUpBackoffMax)
		cold.topUpAfter = now + int64(backoff)
	}
}

// minIdleTarget is the number of idle conns WithMinIdle(n) keeps per
// address: n bounded by the capacity and by WithMaxActive.
func minIdleTarget(n, capacity, maxActive int) int {
	n = min(n, capacity)
	if maxActive > 0 {
		n = min(n, maxActive)
	}
	return n
}

// probesLocked returns the idle conns of b that the liveness check applies
// to, for topUp. The caller holds b.mu.
func (b *bucket) probesLocked() idleProbes {
	probes := idleProbes{now: b.now, takes: b.takesLocked()}
	for _, ic := range b.stackLocked() {
		if ic.pc.probe.applies() {
			probes.idle = append(probes.idle, ic)
		}
	}
	if ic := b.top; ic.pc != nil && ic.pc.probe.applies() { // read in place: see sweepLocked
		probes.idle = append(probes.idle, ic)
	}
	return probes
}

// takesLocked counts the idle conns ever taken by checkouts: Reuses, plus
// the conns a checkout took and then discarded (unreuse takes them back
// out of Reuses), so it never decreases. The caller holds b.mu.
func (b *bucket) takesLocked() int64 {
	c := b.countersLocked()
	return c.Reuses + c.ClosedDeadAtCheckout + c.ClosedValidatorFailed
}

// keptLocked reports whether the cleaner must keep b although nothing is
// bound to it: WithMinIdle tops up an address that was used, until it is
// drained. (An address only looked up, by SpendRetry or Stats, is not.)
func (b *bucket) keptLocked() bool {
	return b.pool.minIdle > 0 && b.topUp
}

// removeIdleLocked takes the conn at i of the stack off it and out of service
// for reason; the caller, which found i, read the stack with idleLocked.
// It closes what removeIdleLocked returns with closeDiscarded after
// releasing b.mu.
func (b *bucket) removeIdleLocked(out []io.Closer, i int, reason CloseReason) []io.Closer {
	ic := b.deleteIdleLocked(i)
	if ic.info.node != nil {
		b.pool.lru.remove(ic.info.node)
	}
	return b.discardLocked(out, ic.pc.v, reason)
}
