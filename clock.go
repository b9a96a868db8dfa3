package connpool

import "time"

// The pool's coarse clock.
//
// Reading the monotonic clock costs 20–45 ns, as much as the rest of a
// checkout. So the hit path reads no clock: Get, New and Close load
// Pool.coarse, the latest reading the pool took, which the cleaner renews
// every tick and every exact reading (a dial, a sweep, a checkout near a
// limit) advances. It is never ahead of the real clock, and it is behind
// by less than one tick plus the cleaner's scheduling delay.
//
// The limits are kept exact by a margin of two ticks: a checkout reuses a
// conn on the coarse reading only if, by that reading, the conn is more
// than the margin away from its idle timeout, its max lifetime and the
// validator's minimum idle time. A conn nearer to any of them is judged on
// an exact reading taken then. Idle stamps come from coarse readings too,
// which are never later than the real return, so an age computed from them
// is never too small. Hence Get never hands out a conn idle for the timeout
// or past its lifetime as long as the coarse clock lags by less than the
// margin: that is, unless the cleaner goroutine was kept from running for
// more than a tick (the process stopped, a VM paused, every thread busy
// for that long). After such a stall, until the cleaner's next tick, a
// conn may be handed out up to the length of the stall past a limit.

const (
	// maxTick is the longest tick when the pool has a limit to keep.
	maxTick = 250 * time.Millisecond

	// quietTick is the tick of a pool with no idle timeout, max lifetime
	// or validator minimum idle time, whose coarse clock only stamps
	// IdleTime.
	quietTick = time.Second
)

// tickFor returns the coarse clock's tick for the shortest of a pool's
// time limits (idle timeout, max lifetime, the validator's minimum idle
// time), or 0 if it has none: a sixteenth of it, at least 1 ms and at most
// maxTick; quietTick without a limit.
func tickFor(limit time.Duration) time.Duration {
	if limit == 0 {
		return quietTick
	}
	return min(max(limit/16, time.Millisecond), maxTick)
}

// shortestLimit returns the shortest non-zero duration of ds, or 0 if
// every one is 0.
func shortestLimit(ds ...time.Duration) time.Duration {
	var d time.Duration
	for _, x := range ds {
		if x > 0 && (d == 0 || x < d) {
			d = x
		}
	}
	return d
}

// readClock reads the clock exactly and advances the coarse clock to the
// reading.
func (p *Pool) readClock() int64 {
	now := p.clock()
	p.publish(now)
	return now
}

// publish advances the coarse clock to now unless it is there already.
func (p *Pool) publish(now int64) {
	for {
		c := p.coarse.Load()
		if now <= c || p.coarse.CompareAndSwap(c, now) {
			return
		}
	}
}

// freshLocked reports whether ic may be handed out on the coarse reading
// now without an exact one: by now it is more than the margin away from
// the idle timeout, its max lifetime, and the validator's minimum idle
// time unless it has passed that already (it then gets validated anyway).
func (b *bucket) freshLocked(ic *idleConn, now int64) bool {
	p := b.pool
	idle := now - ic.since
	return (p.timeout == 0 || idle < p.timeout-p.margin) &&
		(p.maxLifetime == 0 || now < ic.pc.deadline-p.margin) &&
		(p.validator == nil || idle >= p.validateAge || idle < p.validateAge-p.margin)
}
