package connpool

import "io"

// Drain retires the conns of address, for a backend leaving the set a
// balancer chooses from. It closes the address's idle conns now and returns
// their close errors combined. Conns of the address that are in use, or
// being dialed, are closed when their holders return them rather than
// pooled (all counted in ClosedDrained); until their Close returns they
// still count against [WithMaxActive], so no more than its limit of sockets
// to the address exist at any moment. Checkouts waiting at the limit stay in
// line and are served by new dials as the old conns close. A later Get for
// the address dials a new conn; the cleaner forgets the address once
// nothing is bound to it, as for any address; with [WithMinIdle], Drain
// also stops topping the address up until the next Get, New or Warm for it.
// Drain of an unknown address does nothing. It returns [ErrClosed] on a
// closed pool.
func (p *Pool) Drain(address string) error {
	p.mustBeNew()
	if p.closed.Load() {
		return ErrClosed
	}
	r := &p.buckets
	r.mu.Lock()
	b := r.getLocked(address)
	r.mu.Unlock()
	if b == nil {
		return nil
	}
	b.mu.Lock()
	if b.dropped { // the cleaner dropped it meanwhile: nothing was bound to it
		b.mu.Unlock()
		return nil
	}
	cold := b.coldLocked()
	cold.gen++
	b.drained = true
	cold.warming = 0 // the conns of dials warming now will be closed
	b.topUp = false  // until the next Get, New or Warm
	idle := b.takeIdleLocked()
	var toClose []io.Closer
	for _, ic := range idle {
		if ic.info.node != nil {
			p.lru.remove(ic.info.node)
		}
		toClose = b.discardLocked(toClose, ic.pc.v, CloseDrained)
	}
	clear(idle)
	b.mu.Unlock()

	errs := closeEach(toClose)
	if len(toClose) > 0 {
		b.freeClosed(len(toClose))
		b.traceClosed(toClose)
	}
	return combined("drain", errs)
}
