package connpool

import "io"

// Shared mode (clientpool.WithShared): a value serves up to p.shares
// leases at once, as a *rpc.Client or a *grpc.ClientConn can. The values
// that leases share are on loan from the bucket: they count in total, not
// in idle, like conns in use, and are listed in cold.shared with their
// count of leases. A checkout takes a share on the least-loaded value in
// rotation; with none that has room it checks a value out as in exclusive
// mode (an idle one, a dial, or a wait at the WithMaxActive limit) and
// adopts it into cold.shared. When its last lease ends, a value goes back
// to the idle stack through putLocked, so the idle timeout counts from
// then, and the cleaner, Drain, the idle cap and WithMinIdle treat it as
// any idle value.
//
// A value leaves rotation (it takes no new lease) when a lease on it is
// released, when its Closed channel is closed, when its lifetime ends and
// when its address is drained. It is closed, or put back for putLocked to
// close, when its last lease ends.
//
// Invariants, under b.mu:
//   - a checkout that takes conns waits at the address only while no value
//     in rotation has a free share: a freed share goes to the oldest such
//     waiter (unshareLocked), and so do the spare shares of a value
//     adopted (adopt);
//   - every value in cold.shared has load > 0, and counts in total unless
//     closed says it was closed already.

// sharedValue is a value that leases share.
type sharedValue struct {
	pc     *pconn
	load   int32       // leases on the value
	out    bool        // out of rotation: takes no new lease
	reason CloseReason // with out: why to close it at its last lease; notCounted: let putLocked judge
	closed bool        // closed already (ReleaseNow): its leases just leave
}

// shareLocked returns a lease on the least-loaded value of the address that
// is in rotation and has room, or nil if there is none. Values found unfit
// on the way leave rotation. now is the checkout's clock reading.
func (b *bucket) shareLocked(now int64) *Conn {
	if b.cold == nil {
		return nil
	}
	best := -1
	for i := range b.cold.shared {
		sv := &b.cold.shared[i]
		if sv.out || sv.load >= b.pool.shares || !b.inRotationLocked(sv, now) {
			continue
		}
		if best < 0 || sv.load < b.cold.shared[best].load {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	return b.lendLocked(&b.cold.shared[best])
}

// hasShareLocked reports whether a value of the address in rotation has
// room for another lease.
func (b *bucket) hasShareLocked(now int64) bool {
	if b.cold == nil {
		return false
	}
	for i := range b.cold.shared {
		sv := &b.cold.shared[i]
		if !sv.out && sv.load < b.pool.shares && b.inRotationLocked(sv, now) {
			return true
		}
	}
	return false
}

// inRotationLocked reports whether sv may take another lease at the clock
// reading now, and takes it out of rotation if not: its Closed channel is
// closed, its lifetime ended or its address was drained since it was
// dialed. Telling costs a channel receive at most, no I/O: a socket shared
// by several leases cannot be peeked at, since a reply to one of them may
// be waiting.
func (b *bucket) inRotationLocked(sv *sharedValue, now int64) bool {
	p, pc := b.pool, sv.pc
	switch {
	case pc.probe.closed(pc.v):
		sv.reason = CloseDeadAtCheckout
	case p.maxLifetime > 0 && now >= pc.deadline-p.margin && b.exactLocked() >= pc.deadline,
		b.drained && pc.gen != b.genLocked():
		// putLocked closes it and counts why.
	default:
		return true
	}
	sv.out = true
	return false
}

// exactLocked reads the clock, for a lifetime the coarse reading cannot
// judge, and advances b.now to it. Reading the clock is no I/O.
func (b *bucket) exactLocked() int64 {
	now := b.pool.readClock()
	b.now = max(b.now, now)
	return now
}

// lendLocked returns a new lease on sv.
func (b *bucket) lendLocked(sv *sharedValue) *Conn {
	sv.load++
	if sv.load > b.cold.peakLeases {
		b.cold.peakLeases = sv.load
	}
	c := b.newConnLocked(sv.pc, sv.pc.info)
	c.state &^= probedBit
	c.set(reusedBit | notIdleBit | sharedBit)
	return c
}

// serveLocked hands free shares of sv to the oldest checkouts waiting at
// the address, while it is in rotation and has room. If a share is still
// free then, it wakes the checkouts of the address waiting at the
// WithMaxTotal cap, which start over to take it.
func (b *bucket) serveLocked(sv *sharedValue) {
	for sv.load < b.pool.shares && b.waitingLocked() > 0 && b.inRotationLocked(sv, b.now) {
		w := b.cold.waiters.firstForConn()
		if w == nil {
			break
		}
		b.wakeLocked(w, delivery{c: b.lendLocked(sv)})
	}
	if ch := b.cold.shareFreed; ch != nil && sv.load < b.pool.shares && !sv.out {
		close(ch)
		b.cold.shareFreed = nil
	}
}

// shareFreedLocked returns a channel that is closed when a share frees at
// the address, for a checkout waiting at the WithMaxTotal cap; nil outside
// shared mode.
func (b *bucket) shareFreedLocked() <-chan struct{} {
	if b.pool.shares == 0 {
		return nil
	}
	cold := b.coldLocked()
	if cold.shareFreed == nil {
		cold.shareFreed = make(chan struct{})
	}
	return cold.shareFreed
}

// adopt makes c, an exclusive checkout of a value in a shared pool, its
// first lease, and hands the value's spare shares to the checkouts waiting
// at the address.
func (b *bucket) adopt(c *Conn) {
	now := b.pool.coarse.Load()
	b.mu.Lock()
	if now > b.now {
		b.now = now
	}
	b.adoptShareLocked(c, c.load())
	b.mu.Unlock()
}

// adoptShareLocked is adopt with b.mu held; pc is c's value. A reused idle
// value that needs no check outside the lock is adopted by the checkout
// that takes it, without locking b again.
func (b *bucket) adoptShareLocked(c *Conn, pc *pconn) {
	c.set(sharedBit)
	cold := b.coldLocked()
	cold.shared = append(cold.shared, sharedValue{pc: pc, load: 1})
	cold.peakLeases = max(cold.peakLeases, 1)
	b.serveLocked(&cold.shared[len(cold.shared)-1])
}

// sharedLocked returns the index in cold.shared of the value pc.
func (b *bucket) sharedLocked(pc *pconn) int {
	for i := range b.cold.shared {
		if b.cold.shared[i].pc == pc {
			return i
		}
	}
	panic("connpool: bug: a shared lease's value is not listed")
}

// unshareLocked ends a lease on pc: its share goes to the oldest checkout
// waiting at the address if the value is in rotation, and otherwise the
// value's count of leases goes down. At the last lease the value leaves
// cold.shared: it is closed if it is out of rotation for a reason of its
// own, or else goes to putLocked, as a returned conn does, with what that
// returns; last reports that it did.
func (b *bucket) unshareLocked(pc *pconn) (toClose []io.Closer, victim *lruNode, last bool) {
	i := b.sharedLocked(pc)
	sv := &b.cold.shared[i]
	sv.load--
	if !sv.out {
		b.serveLocked(sv)
	}
	if sv.load > 0 {
		return nil, nil, false
	}
	done := *sv
	b.removeSharedLocked(i)
	switch {
	case done.closed:
		return nil, nil, false
	case done.reason != notCounted:
		return b.discardLocked(nil, pc.v, done.reason), nil, false
	}
	toClose, victim = b.putLocked(pc, pc.info)
	return toClose, victim, true
}

// removeSharedLocked takes the value at index i off cold.shared.
func (b *bucket) removeSharedLocked(i int) {
	s := b.cold.shared
	last := len(s) - 1
	s[i] = s[last]
	s[last] = sharedValue{}
	b.cold.shared = s[:last]
}

// breakShareLocked ends a lease on the shared value pc whose holder called
// Release: the value leaves rotation, and is closed when its last lease
// ends, or at once if now is set. It returns what the caller must close
// with closeDiscarded once b.mu is released.
func (b *bucket) breakShareLocked(pc *pconn, now bool) []io.Closer {
	i := b.sharedLocked(pc)
	sv := &b.cold.shared[i]
	if sv.reason == notCounted {
		sv.reason = CloseReleased
	}
	sv.out = true
	var toClose []io.Closer
	if now && !sv.closed {
		sv.closed = true
		toClose = b.discardLocked(toClose, pc.v, sv.reason)
	}
	sv.load--
	if sv.load == 0 {
		if !sv.closed {
			toClose = b.discardLocked(toClose, pc.v, sv.reason)
		}
		b.removeSharedLocked(i)
	}
	return toClose
}

// sharedStatsLocked fills in the shared-mode counts of d.
func (b *bucket) sharedStatsLocked(d *DestinationStats) {
	if b.cold == nil {
		return
	}
	for _, sv := range b.cold.shared {
		d.Leases += int64(sv.load)
		if !sv.closed {
			d.Shared++
		}
	}
	d.PeakLeases = int64(b.cold.peakLeases)
}
