package connpool

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// WithMaxTotal caps the open conns across all addresses at n, as Apache
// HttpClient's maxTotal does next to its per-route limit: conns being
// dialed, in use, idle and being closed all count. A checkout that needs a
// dial at the cap closes the least recently returned idle conn of any
// address to make room, and waits, in arrival order across all addresses,
// for the slot that frees, until its context ends and for at most the
// [WithWaitTimeout] duration, counted from the start of its wait at the
// address's WithMaxActive limit if it waited there first (then it fails
// with an error wrapping [ErrExhausted]). While checkouts wait at the cap, a conn returned to an
// address where no checkout waits is closed rather than kept idle, so that
// its slot goes to the oldest of them; Warm and WithMinIdle dial only into
// free slots. Closes made for the cap are counted in ClosedIdleCapEvicted.
// Checkouts waiting at the cap are counted in Stats.Waiting and in the
// WaitCount of their address, but not in the Waiting of the address.
//
// The pool then keeps a list of its idle conns in the order they were
// returned, as it does for [WithMaxIdle], so Get no longer takes its
// fastest path. At the cap with checkouts waiting, a conn returned to an
// address is closed for the oldest waiter even if that waiter wants the
// same address, which then dials anew. The default, 0, means no cap.
// Negative n is rejected by [New].
func WithMaxTotal(n int) Option {
	return func(o *options) { o.maxTotal = n }
}

// errAtMaxTotal is the error of a checkout that waited at the WithMaxTotal
// cap for the wait timeout, and of Warm at the cap.
var errAtMaxTotal = fmt.Errorf("%w: the pool is at its WithMaxTotal cap", ErrExhausted)

// noIdleCap is the LRU's cap when it is kept for WithMaxTotal alone.
const noIdleCap = math.MaxInt

// totalCap counts the pool's slots under WithMaxTotal: one for each conn
// open or being closed, and one for each dial past its wait at the cap. A
// slot is taken before a dial starts and freed when the dial fails or the
// conn's Close returns (bucket.dialFailedLocked, bucket.freeClosed);
// checkouts wait for one in a FIFO queue that spans all addresses.
//
// Lock order: bucket.mu, then totalCap.mu. Nothing else is locked under it.
type totalCap struct {
	max int

	mu    sync.Mutex
	open  int       // Invariant: open <= max.
	queue waitQueue // checkouts waiting for a slot, oldest first

	// waiting is queue.len(), for readers that do not take mu.
	waiting atomic.Int32
}

// tryAcquire takes a slot if one is free and nobody waits for one.
func (t *totalCap) tryAcquire() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.open < t.max && t.queue.len() == 0 {
		t.open++
		return true
	}
	return false
}

// release frees n slots and hands them to the oldest waiters.
func (t *totalCap) release(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.open -= n
	if t.open < 0 {
		panic("connpool: bug: WithMaxTotal slots freed twice")
	}
	for t.open < t.max && t.queue.len() > 0 {
		w := t.queue.first()
		t.queue.remove(w)
		t.open++
		w.ch <- delivery{grant: true} // never blocks: room for one
	}
	t.waiting.Store(int32(t.queue.len()))
}

// releaseTotal frees n slots of the WithMaxTotal cap, if the pool has one.
func (p *Pool) releaseTotal(n int) {
	if p.total != nil {
		p.total.release(n)
	}
}

// waitTotal takes a slot of the WithMaxTotal cap for a dial to b's
// address, waiting for one at the cap. It returns an error only if it did
// not get one: the pool closed, ctx ended or the wait timeout ran out. The
// caller holds a reservation on b (b.dialing counts it), and no lock.
//
// span.since is when the checkout started waiting at b's WithMaxActive
// limit, or zero if it did not: a checkout waits at most WithWaitTimeout
// in all, and counts once in WaitCount. If the checkout waits here,
// waitTotal sets span.since, if it was zero, to the start of this wait,
// and span.end to its end. In shared mode a share that frees at b's
// address ends the wait with errStartOver: the checkout gives its
// reservation back and starts over, to take the share.
func (p *Pool) waitTotal(ctx context.Context, b *bucket, span *waitSpan) error {
	var freed <-chan struct{} // closes when a share frees at b's address
	if p.shares > 0 {
		b.mu.Lock()
		share := b.hasShareLocked(b.now)
		freed = b.shareFreedLocked()
		b.mu.Unlock()
		if share { // freed since the checkout looked
			return errStartOver
		}
	}
	t := p.total
	t.mu.Lock()
	if t.open < t.max && t.queue.len() == 0 {
		t.open++
		t.mu.Unlock()
		return nil
	}
	w := &waiter{ch: make(chan delivery, 1)}
	t.queue.pushBack(w)
	t.waiting.Store(int32(t.queue.len()))
	t.mu.Unlock()

	start := time.Now()
	b.mu.Lock()
	if span.since.IsZero() {
		b.coldLocked().counters.WaitCount++
		span.since = start
	}
	b.mu.Unlock()
	if p.trace != nil {
		// Should the hook panic, the checkout leaves the line and gives
		// its reservation back.
		p.traceWaitStart(b, func() {
			t.leave(w)
			b.mu.Lock()
			b.cancelDialLocked()
			b.mu.Unlock()
		})
	}
	// Make room: the least recently returned idle conn, or the next one
	// returned, is closed, and its slot goes to the oldest waiter.
	if victim := p.lru.evictForWaiter(); victim != nil {
		victim.b.evict(victim)
	}

	var expired <-chan time.Time
	if p.waitTimeout > 0 {
		timer := time.NewTimer(p.waitTimeout - start.Sub(span.since))
		defer timer.Stop()
		expired = timer.C
	}
	var err error
	select {
	case <-w.ch:
	case <-ctx.Done():
		err = ctx.Err()
	case <-expired:
		err = errAtMaxTotal
	case <-p.closing.Done():
		err = ErrClosed
	case <-freed:
		err = errStartOver // a share of b's address freed: take it
	}
	if err != nil {
		t.leave(w)
	}
	span.end = time.Now()
	p.lru.capWanted(int(t.waiting.Load()))
	waited := span.end.Sub(start)
	b.waited(waited)
	if p.trace != nil {
		reported := err
		if err == errStartOver {
			reported = nil // a share to take
		}
		// Should the hook panic, the slot and the caller's reservation
		// are given back.
		p.traceWaitDone(b, waited, reported, func() {
			if err == nil {
				t.release(1)
			}
			b.mu.Lock()
			b.cancelDialLocked()
			b.mu.Unlock()
		})
	}
	return err
}

// leave takes w, a waiter that gives up, out of line, or passes on the
// slot it was granted as it gave up.
func (t *totalCap) leave(w *waiter) {
	t.mu.Lock()
	granted := !w.queued
	if !granted {
		t.queue.remove(w)
		t.waiting.Store(int32(t.queue.len()))
	}
	t.mu.Unlock()
	if granted {
		t.release(1)
	}
}

// reserveTotal takes a slot of the WithMaxTotal cap for the dial that the
// caller reserved on b, waiting at the cap; without the cap it does
// nothing. If it gets none, it gives the reservation back and returns why.
// span is as for waitTotal.
func (p *Pool) reserveTotal(ctx context.Context, b *bucket, span *waitSpan) error {
	if p.total == nil {
		return nil
	}
	err := p.waitTotal(ctx, b, span)
	if err != nil {
		b.mu.Lock()
		b.cancelDialLocked()
		b.mu.Unlock()
	}
	return err
}
