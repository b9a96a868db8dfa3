package connpool

import (
	"errors"
	"io"
	"slices"
	"sort"
	"time"
)

// errStartOver tells a checkout that the idle value its wait was served
// with failed its liveness check or validator and was discarded: it starts
// over, at the back of the line if it has to wait again.
var errStartOver = errors.New("connpool: bug: discarded delivery escaped")

// A waiter is a checkout parked at an address that has reached its
// MaxActive limit. It is woken exactly once, under the bucket's lock, by a
// delivery into ch.
type waiter struct {
	ch    chan delivery // buffered 1; written once, by whoever dequeues the waiter
	fresh bool          // waits to dial (New), never for a returned conn

	prev, next *waiter // links in the bucket's queue; nil when not queued
	queued     bool
}

// delivery is what wakes a waiter: exactly one field is set.
type delivery struct {
	c     *Conn  // a returned conn, handed over with a fresh handle
	idle  bool   // with c: the conn was idle; counted as a reuse, and checked before use
	since int64  // with idle: the conn's idle stamp
	grant bool   // a slot, already counted in bucket.dialing: the waiter dials
	gen   uint32 // with grant: the generation the slot was reserved in
	err   error  // the pool was closed
}

// waitQueue is a FIFO of waiters with O(1) removal from anywhere.
type waitQueue struct {
	head, tail *waiter
	n          int
}

func (q *waitQueue) len() int { return q.n }

func (q *waitQueue) pushBack(w *waiter) {
	if w.queued {
		panic("connpool: bug: waiter queued twice")
	}
	w.prev, w.next, w.queued = q.tail, nil, true
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	q.n++
}

func (q *waitQueue) remove(w *waiter) {
	if !w.queued {
		panic("connpool: bug: removing a waiter that is not queued")
	}
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next, w.queued = nil, nil, false
	q.n--
}

// first returns the oldest waiter, or nil.
func (q *waitQueue) first() *waiter { return q.head }

// firstForConn returns the oldest waiter that takes a returned conn: one
// that is not waiting to dial. It returns nil if there is none.
func (q *waitQueue) firstForConn() *waiter {
	for w := q.head; w != nil; w = w.next {
		if !w.fresh {
			return w
		}
	}
	return nil
}

// wakeLocked dequeues w and delivers d to it. The caller holds b.mu.
func (b *bucket) wakeLocked(w *waiter, d delivery) {
	b.cold.waiters.remove(w) // queued, so cold exists
	b.waiting--
	w.ch <- d // never blocks: ch has room for the one delivery
}

// grantSlotsLocked hands free slots to the oldest waiters, in arrival
// order. Call it whenever total or dialing goes down. The caller holds b.mu.
func (b *bucket) grantSlotsLocked() {
	for b.waitingLocked() > 0 && b.hasSlotLocked() {
		b.dialing++
		b.wakeLocked(b.cold.waiters.first(), delivery{grant: true, gen: b.cold.gen})
	}
}

// handOffLocked gives a returned conn straight to the oldest waiter that
// takes conns. It reports false if no such waiter exists. The caller holds
// b.mu.
func (b *bucket) handOffLocked(pc *pconn) bool {
	if b.cold == nil {
		return false
	}
	w := b.cold.waiters.firstForConn()
	if w == nil {
		return false
	}
	c := b.newConnLocked(pc, pc.info)
	c.set(reusedBit | notIdleBit)
	b.wakeLocked(w, delivery{c: c})
	return true
}

// handOffIdleLocked gives pc, a value taken off the idle stack with the
// stamp since after sitting idle for idle nanoseconds, to the oldest
// waiter that takes conns, which checks it before use. It reports false if
// there is no such waiter.
func (b *bucket) handOffIdleLocked(pc *pconn, idle, since int64) bool {
	w := b.cold.waiters.firstForConn()
	if w == nil {
		return false
	}
	c := b.newConnLocked(pc, pc.info)
	c.set(reusedBit)
	c.setIdle(idle)
	b.wakeLocked(w, delivery{c: c, idle: true, since: since})
	return true
}

// restoreIdleLocked puts pc, taken off the idle stack with the stamp since
// and handed to no one, back on the stack at its place by that stamp, so
// that its idle time goes on counting; or takes it out of service, and
// returns it for the caller to close, if it may no longer be kept. Like
// putLocked, it returns an LRU victim in another bucket for the caller to
// evict after releasing b.mu.
func (b *bucket) restoreIdleLocked(pc *pconn, info *connInfo, since int64) (toClose []io.Closer, victim *lruNode) {
	p := b.pool
	ic := idleConn{pc: pc, info: info, since: since}
	switch {
	case p.closed.Load():
		return b.discardLocked(nil, pc.v, notCounted), nil
	case b.drained && pc.gen != b.genLocked():
		return b.discardLocked(nil, pc.v, CloseDrained), nil
	case b.idleLenLocked() >= p.capacity:
		return b.discardLocked(nil, pc.v, CloseBucketFull), nil
	}
	if reason := b.unusableLocked(&ic, b.now); reason != notCounted {
		return b.discardLocked(nil, pc.v, reason), nil
	}
	if p.lru != nil {
		// The LRU keeps no order by age: it counts the value as
		// returned now.
		info.node = &lruNode{b: b}
		victim = p.lru.add(info.node)
	}
	// Keep the stamps non-decreasing up the stack.
	idle := b.idleLocked()
	i := sort.Search(len(idle), func(i int) bool { return idle[i].since > since })
	b.setStackLocked(slices.Insert(idle, i, ic))
	if victim != nil && victim.b == b {
		return b.evictLocked(nil, victim), nil
	}
	return nil, victim
}

// abandonLocked is called by a waiter that gives up. If it was still
// queued it just leaves; if a delivery raced with giving up, the conn or
// slot it carries is passed on as if the waiter had never existed. Conns to
// close are returned. The caller holds b.mu.
func (b *bucket) abandonLocked(w *waiter) (toClose []io.Closer, victim *lruNode) {
	if w.queued {
		b.cold.waiters.remove(w)
		b.waiting--
		return nil, nil
	}
	d := <-w.ch // delivered under b.mu, so it is there
	switch {
	case d.c != nil:
		// The handle was never handed out; only the socket moves on.
		if d.idle {
			// An idle value goes to the next waiter as one, to be
			// checked, or back on the idle stack with its stamp. Its
			// reuse stays counted: the count of takes only grows
			// (takesLocked).
			pc := d.c.end()
			if b.handOffIdleLocked(pc, d.c.idle(), d.since) {
				return nil, nil
			}
			return b.restoreIdleLocked(pc, d.c.info, d.since)
		}
		if d.c.has(sharedBit) {
			toClose, victim, _ := b.unshareLocked(d.c.end())
			return toClose, victim
		}
		return b.putLocked(d.c.end(), d.c.info)
	case d.grant:
		b.cancelDialLocked()
	}
	return nil, nil
}

// waited records the wait of a waiter that got its delivery.
func (b *bucket) waited(d time.Duration) {
	b.mu.Lock()
	b.coldLocked().counters.WaitDuration += d
	b.mu.Unlock()
}

// giveUp takes a waiter out of line when its context ends or its wait
// timeout runs out.
func (b *bucket) giveUp(w *waiter, d time.Duration) {
	b.mu.Lock()
	b.coldLocked().counters.WaitDuration += d
	toClose, victim := b.abandonLocked(w)
	if (len(toClose) > 0 || victim != nil) && !b.pool.closed.Load() {
		// Off the caller's path, which has its own error to return at
		// once; see closeLaterLocked for why Pool.Close cannot miss this.
		later, laterVictim := toClose, victim
		b.pool.closers.Go(func() { b.finishAbandon(later, laterVictim) })
		toClose, victim = nil, nil
	}
	b.mu.Unlock()
	b.finishAbandon(toClose, victim)
}

// finishAbandon closes what abandonLocked took out of service and evicts
// its LRU victim. The caller holds no lock.
func (b *bucket) finishAbandon(toClose []io.Closer, victim *lruNode) {
	if victim != nil {
		victim.b.evict(victim)
	}
	_ = b.closeDiscarded(toClose) // the waiter that gave up has its own error
}
