package connpool

import "net"

// Drain retires address, for a backend leaving the set a balancer chooses
// from. It closes the address's idle conns now and returns their close
// errors combined; conns of the address still in use are closed when their
// holders return them, not pooled (all counted in ClosedDrained); waiting
// checkouts move on to a fresh start. The pool forgets the address's old
// state once nothing is bound to it, and a later Get for the address starts
// afresh, dialing new conns. Drain of an unknown address does nothing. It
// returns [ErrClosed] on a closed pool.
func (p *Pool) Drain(address string) error {
	if p.closed.Load() {
		return ErrClosed
	}
	r := &p.buckets
	r.mu.Lock()
	b := r.all[address]
	if b == nil {
		r.mu.Unlock()
		return nil
	}
	delete(r.all, address)
	r.snapshotLocked()
	b.mu.Lock()
	b.draining = true
	idle := b.idle
	b.idle = nil
	var toClose []net.Conn
	for _, ic := range idle {
		if ic.node != nil {
			p.lru.remove(ic.node)
		}
		toClose = b.discardLocked(toClose, ic.pc.nc, &b.counters.ClosedDrained)
	}
	// Waiters start over: their checkout looks the address up again.
	for b.waiters.len() > 0 {
		b.wakeLocked(b.waiters.first(), delivery{err: errBucketDropped})
	}
	if r.draining == nil {
		r.draining = make(map[*bucket]struct{})
	}
	r.draining[b] = struct{}{}
	r.forgetDrainedLocked(b) // at once if nothing is bound to it
	b.mu.Unlock()
	r.mu.Unlock()

	err := closeEach(toClose)
	if len(toClose) > 0 {
		b.freeClosed(len(toClose))
	}
	return err
}
