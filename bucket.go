package connpool

import (
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"
)

// errBucketDropped tells a caller that the cleaner dropped the bucket it
// holds. The caller looks the address up again, which creates a new bucket.
var errBucketDropped = errors.New("connpool: bug: dropped bucket escaped")

// idleConn is a conn resting in a bucket.
type idleConn struct {
	pc    *pconn
	info  *connInfo // pc.info, kept here so the hit path need not read pc
	since int64     // a clock reading no later than the moment pc was returned
}

// bucket is the per-address state of a [Pool]: a LIFO stack of idle conns,
// the count of conns and dials bound to the address, and the checkouts
// waiting for a slot.
//
// Idle stamps come from b.now, the latest clock reading the pool took for
// this address, advanced to the coarse clock at every checkout and return
// (clock.go). A stamp is never later than the real return time, so the age
// computed from it is never too small, and it is earlier by at most the
// coarse clock's lag.
//
// The whole struct, with its newest idle conn inline, is 128 bytes on
// 64-bit platforms: at 100,000 addresses it is what the pool costs per
// address, and what has to come from memory on each checkout. 128 bytes is
// a size class whose objects the allocator aligns to 128 bytes, so a
// checkout at an address that is not cached touches two adjacent cache
// lines, which the processor can fetch as a pair, and 100,000 addresses
// take 12.8 MB, a fifth fewer pages for the TLB to miss on than the 16 MB
// of 160-byte buckets. So what checkouts seldom touch is kept out of line
// (stack, cold), and the counters are 32 bits wide with their carries in
// cold (countReuseLocked). TestHotStructSizes checks the size.
type bucket struct {
	mu sync.Mutex // protects the fields below but address and pool; taken after registry.mu and leakTracker.mu, before idleLRU.mu

	address string

	// The idle conns form a LIFO stack, kept in two parts: top, if it
	// holds a conn (top.pc is not nil), is the most recently returned one,
	// and stack holds the others, oldest first. A return puts its conn in
	// top, moving the conn there onto stack first; a checkout takes top,
	// else stack's newest. So the usual alternation of checkouts and
	// returns at an address touches top alone, in the bucket, and not the
	// array behind stack, which would be one more cache miss; and an
	// address that keeps one idle conn allocates no array. stack is a
	// pointer to the slice, allocated with the first array, so that the
	// bucket keeps its size; read and set it with stackLocked and
	// setStackLocked. The rest of the code reads the idle conns through
	// idleLocked, which moves top onto stack so that stack holds them all,
	// or counts them with idleLenLocked; the sweep and the probes of
	// WithMinIdle read top in place.
	// Invariants:
	//   - idleLenLocked() <= pool.capacity;
	//   - since is non-decreasing from the stack's oldest up to top (stamps
	//     are taken from now, which never decreases), so idle-expired
	//     conns form a prefix and the stack's oldest, or else top, is the
	//     least recently returned;
	//   - once the pool is closed, there is no idle conn.
	top   idleConn
	stack *[]idleConn

	// now is the latest clock reading seen for this bucket. It never
	// decreases.
	now int64

	pool *Pool // set at creation, then only read

	// handles is a batch of unused Conn handles, carved one per checkout.
	// Allocating handles in batches rather than one by one takes most of
	// the allocator's cost off the hit path. A handle is never reused, so
	// every checkout still gets a distinct one. A live handle keeps its
	// batch in memory, but an ended handle refers to no socket, so what a
	// batch keeps reachable is bounded by the handles still in use. A
	// sweep that finds that the address saw no checkout since the previous
	// sweep drops the unused handles (sweepLocked): a quiet address holds
	// no batch. In a pool of more than batchedAddresses addresses, handles
	// are allocated one at a time instead (newConnLocked). carved counts
	// the handles of the batch handed out so far; a batch is let go of
	// once all are.
	handles *[handleBatch]Conn

	// retryTokens is the address's retry budget, in retries: each
	// checkout pays in, each retry takes one out (budget.go).
	retryTokens float64

	// cold holds what most addresses never need: waiting, Warm and Drain
	// state and the rarer counters. It is allocated the first time one of
	// them is needed, and nil means all of them are zero.
	cold *bucketCold

	// reuses and dials are the counters that checkouts move, modulo 2^32;
	// cold holds the rest of them and the other counters.
	// countersLocked reports the sums.
	reuses uint32
	dials  uint32

	// total counts open conns bound to address: idle plus in use.
	// Invariant: total >= idleLenLocked().
	total int32

	// dialing counts dials in flight for address, including slots granted
	// to waiters that are about to dial. Invariant: with a MaxActive limit,
	// total + dialing + closing <= maxActive.
	dialing int32

	// closing counts conns taken out of service whose Close has not
	// returned yet. They keep their slot until it has: a socket exists
	// until it is closed. Every conn given to closeDiscarded was counted
	// here by discardLocked.
	closing int32

	// waiting is cold.waiters.len(), kept here so that a Close with no
	// checkout waiting need not read cold.
	waiting int32

	// dropped is set when the cleaner removes the bucket from the registry.
	// A dropped bucket has no conns, dials, closes or waiters, and accepts
	// none. Only the cleaner drops buckets, so a bucket that is not dropped
	// is in the registry's map.
	dropped bool

	// probing is set once a conn the liveness check applies to is bound
	// to the address. Until then no conn of the address needs the check,
	// and handing one out need not read the conn to find out.
	probing bool

	// blocking is set once a value with an Unblocked method is bound to
	// the address. Until then no idle value can be blocked, and the fast
	// path need not ask.
	blocking bool

	// drained is set by the address's first Drain. Until then every conn
	// is of generation 0, so Close need not read the generation in cold.
	drained bool

	carved uint8 // see handles

	// busy is set by every checkout and cleared by every sweep; a sweep
	// that finds it clear finds the address quiet.
	busy bool

	// topUp is set by a checkout that did not take the fast path, by
	// Warm, and by every dial of the current generation, and cleared by
	// Drain: WithMinIdle keeps the address topped up while it is set
	// (minidle.go). Every conn bound to the address since its last Drain
	// was dialed after it, so an address that was used and not drained
	// since has it set.
	topUp bool
}

// stackLocked returns the idle conns below top, oldest first.
func (b *bucket) stackLocked() []idleConn {
	if b.stack == nil {
		return nil
	}
	return *b.stack
}

// setStackLocked makes s the idle conns below top.
func (b *bucket) setStackLocked(s []idleConn) {
	if b.stack == nil {
		if cap(s) == 0 {
			return
		}
		b.stack = new([]idleConn)
	}
	*b.stack = s
}

// deleteIdleLocked takes the conn at i of idleLocked's stack off it and
// returns it.
func (b *bucket) deleteIdleLocked(i int) idleConn {
	s := b.stackLocked()
	ic := s[i]
	b.setStackLocked(slices.Delete(s, i, i+1))
	return ic
}

// idleLocked returns the whole idle stack, oldest first, after moving top
// onto it. The caller may change the stack with setStackLocked or
// deleteIdleLocked.
func (b *bucket) idleLocked() []idleConn {
	if b.top.pc != nil {
		if s := b.stackLocked(); len(s) == cap(s) {
			b.growIdleLocked()
		}
		b.setStackLocked(append(b.stackLocked(), b.top))
		b.top = idleConn{}
	}
	return b.stackLocked()
}

// idleLenLocked returns how many conns are idle.
func (b *bucket) idleLenLocked() int {
	n := len(b.stackLocked())
	if b.top.pc != nil {
		n++
	}
	return n
}

// newestIdleLocked returns the most recently returned idle conn, or nil.
func (b *bucket) newestIdleLocked() *idleConn {
	if b.top.pc != nil {
		return &b.top
	}
	if s := b.stackLocked(); len(s) > 0 {
		return &s[len(s)-1]
	}
	return nil
}

// popIdleLocked takes ic, which newestIdleLocked returned, off the stack.
func (b *bucket) popIdleLocked(ic *idleConn) {
	*ic = idleConn{}
	if ic != &b.top {
		s := b.stackLocked()
		b.setStackLocked(s[:len(s)-1])
	}
}

// pushIdleLocked puts ic on top of the stack, which has room for it.
func (b *bucket) pushIdleLocked(ic idleConn) {
	if b.top.pc != nil {
		b.idleLocked()
	}
	b.top = ic
}

// takeIdleLocked empties the idle stack and returns what it held.
func (b *bucket) takeIdleLocked() []idleConn {
	idle := b.idleLocked()
	b.stack = nil
	return idle
}

// growIdleLocked moves the full array of idle conns below top to a larger
// one: twice its size, but never more than the pool's capacity, which the
// stack cannot outgrow.
func (b *bucket) growIdleLocked() {
	s := b.stackLocked()
	n := max(min(2*cap(s), b.pool.capacity), cap(s)+1)
	idle := make([]idleConn, len(s), n)
	copy(idle, s)
	clear(s)
	b.setStackLocked(idle)
}

// newBucket returns the empty bucket of address in p.
func newBucket(p *Pool, address string) *bucket {
	return &bucket{pool: p, address: address}
}

// bucketCold is the part of a bucket that most addresses never need.
type bucketCold struct {
	// waiters queues checkouts that found the address at its MaxActive
	// limit, oldest first. Invariants: a waiter is queued only while no slot
	// is free (grantSlotsLocked runs whenever one frees); a waiter from Get
	// only while no usable conn is idle (a returned conn goes to a waiter
	// first); and a waiter from New that found idle conns has had the oldest
	// taken out of service, so a slot frees for it once that Close returns.
	waiters waitQueue

	// warming counts the dials of Warm among dialing that were reserved in
	// the current generation; Drain starts it again from zero, since the
	// conns of older warming dials will be closed, not pooled.
	warming int

	// gen counts the calls of Pool.Drain. A conn whose dial was reserved in
	// an earlier generation is closed when it comes back rather than
	// pooled, but keeps its slot until then, so the MaxActive limit counts
	// conns from before a drain too. Invariant: every idle conn is of the
	// current generation.
	gen uint32

	// counters are the bucket's counters, but for the part of Dials and
	// Reuses that the bucket's own fields hold (countersLocked).
	counters Counters

	// watching is set while a goroutine watches for blocked idle values
	// to unblock, for the checkouts waiting at the address (unblock.go).
	watching bool

	// shared lists the values that leases share, in shared mode
	// (shared.go), and peakLeases is the most leases one of them held.
	shared     []sharedValue
	peakLeases int32
	shareFreed chan struct{} // see shareFreedLocked

	// WithMinIdle's backoff (minidle.go): after a failed top-up dial the
	// address is not topped up before the clock reads topUpAfter.
	topUpFailures int
	topUpAfter    int64
}

// coldLocked returns the bucket's cold part, allocating it if needed.
func (b *bucket) coldLocked() *bucketCold {
	if b.cold == nil {
		b.cold = new(bucketCold)
	}
	return b.cold
}

// spareHandlesLocked returns how many handles of the current batch are
// left to carve.
func (b *bucket) spareHandlesLocked() int {
	if b.handles == nil {
		return 0
	}
	return handleBatch - int(b.carved)
}

// waitingLocked returns how many checkouts wait at the address.
func (b *bucket) waitingLocked() int {
	return int(b.waiting)
}

// genLocked returns the address's drain generation.
func (b *bucket) genLocked() uint32 {
	if b.cold == nil {
		return 0
	}
	return b.cold.gen
}

// warmingLocked returns how many of the address's dials are Warm's.
func (b *bucket) warmingLocked() int {
	if b.cold == nil {
		return 0
	}
	return b.cold.warming
}

// countLocked counts a conn closed for reason.
func (b *bucket) countLocked(reason CloseReason) {
	if reason != notCounted {
		b.coldLocked().counters.count(reason)
	}
}

// countersLocked returns the bucket's counters.
func (b *bucket) countersLocked() Counters {
	var c Counters
	if b.cold != nil {
		c = b.cold.counters
	}
	c.Dials += int64(b.dials)
	c.Reuses += int64(b.reuses)
	return c
}

// countReuseLocked counts a reuse, carrying into cold when reuses wraps.
func (b *bucket) countReuseLocked() {
	b.reuses++
	if b.reuses == 0 {
		b.coldLocked().counters.Reuses += 1 << 32
	}
}

// uncountReuseLocked takes back a reuse that countReuseLocked counted,
// borrowing from cold when reuses wraps.
func (b *bucket) uncountReuseLocked() {
	if b.reuses == 0 {
		b.coldLocked().counters.Reuses -= 1 << 32
	}
	b.reuses--
}

// countDialLocked counts a dial, carrying into cold when dials wraps.
func (b *bucket) countDialLocked() {
	b.dials++
	if b.dials == 0 {
		b.coldLocked().counters.Dials += 1 << 32
	}
}

const (
	// handleBatch is how many Conn handles a bucket allocates at once.
	handleBatch = 16

	// batchedAddresses is the most addresses a pool may know for its
	// buckets to allocate handles in batches. Beyond it, a bucket's batch
	// would most likely have left the CPU caches by the bucket's next
	// checkout, so that carving a handle from it costs a cache miss, more
	// than allocating one; and the spare handles would cost memory per
	// address.
	batchedAddresses = 1024
)

// newConnLocked returns a fresh handle for pc, whose info the caller
// passes in.
func (b *bucket) newConnLocked(pc *pconn, info *connInfo) *Conn {
	c := b.carveLocked()
	if c == nil {
		c = new(Conn)
	}
	c.pc = unsafe.Pointer(pc) // not yet shared: see Conn.pc
	c.b, c.info = b, info
	if b.probing && pc.probe.applies() {
		c.set(probedBit)
	}
	return c
}

// carveLocked returns an unused handle of the bucket's batch, or nil in a
// pool of many addresses, which allocates its handles one by one
// (batchedAddresses). It counts the checkout in busy.
func (b *bucket) carveLocked() *Conn {
	b.busy = true
	switch {
	case b.handles != nil:
	case b.pool.buckets.large.Load():
		return nil
	default:
		b.handles, b.carved = new([handleBatch]Conn), 0
	}
	c := &b.handles[b.carved]
	b.carved++
	if b.carved == handleBatch {
		b.handles = nil // hold on to no spent batch
	}
	return c
}

// reuseLocked returns a handle for an idle conn being handed out, telling
// whether it was reused and for how long it sat idle by the checkout's
// clock reading now.
func (b *bucket) reuseLocked(ic *idleConn, now int64) *Conn {
	b.countReuseLocked()
	return b.fillReused(b.carveLocked(), *ic, b.probing && ic.pc.probe.applies(), now)
}

// fillReused returns c, carved for the idle conn ic, or a new handle if c
// is nil, made for ic: reused, idle since ic.since, and probed as told.
// The handle is the checkout's alone from carving, so the caller need not
// hold b.mu.
func (b *bucket) fillReused(c *Conn, ic idleConn, probed bool, now int64) *Conn {
	if c == nil {
		c = new(Conn)
	}
	c.pc = unsafe.Pointer(ic.pc) // not yet shared: see Conn.pc
	c.b, c.info = b, ic.info
	c.state = reusedBit
	if probed {
		c.state |= probedBit
	}
	c.setIdle(now - ic.since)
	return c
}

// unreuse takes a reused conn that failed its checks out of service before
// its handle c was handed out, counting why instead of a reuse. The conn is
// closed in the background, or before unreuse returns if now is set or the
// pool is closed.
func (b *bucket) unreuse(c *Conn, pc *pconn, reason CloseReason, now bool) {
	c.end()
	b.mu.Lock()
	b.uncountReuseLocked()
	toClose := b.discardLocked(nil, pc.v, reason)
	if !now {
		toClose = b.closeOffPathLocked(toClose)
	}
	b.mu.Unlock()
	_ = b.closeDiscarded(toClose) // nobody to report a failed conn's close error to
}

// hasSlotLocked reports whether one more conn may be dialed for the address.
func (b *bucket) hasSlotLocked() bool {
	max := b.pool.maxActive
	return max == 0 || int(b.total+b.dialing+b.closing) < max
}

// acquire serves a checkout. Unless fresh is set it first pops the most
// recently returned idle conn that is still usable, taking the unusable
// ones out of service on the way; they are closed in the background, so the
// checkout does not wait on their Close. The newest idle conn is judged on
// a coarse reading if it is far from every limit (freshLocked), and on an
// exact reading otherwise. It returns exactly one of:
//   - c: a reused conn;
//   - w: the address is at its limit; the caller waits on w;
//   - err: errBucketDropped or ErrClosed;
//   - none of them: a slot is reserved (b.dialing counts it) for a dial of
//     generation gen; the caller dials with dialFor.
//
// pay is set on the checkout's first round at b: the checkout pays its share
// into the retry budget once, not again for each conn it discards. waited
// is set once the checkout has waited: a later round's wait counts no
// second time in WaitCount.
func (b *bucket) acquire(fresh, pay, waited bool) (c *Conn, w *waiter, gen uint32, err error) {
	p := b.pool
	b.mu.Lock()
	// Read under the lock: a checkout may wait for it, and each round of
	// a checkout may follow a validator that took any time.
	now := p.coarse.Load()
	if b.dropped {
		b.mu.Unlock()
		return nil, nil, 0, errBucketDropped
	}
	if p.closed.Load() {
		b.mu.Unlock()
		return nil, nil, 0, ErrClosed
	}
	if now > b.now {
		b.now = now
	}
	if pay {
		b.depositLocked()
	}
	// The common case: the newest idle conn is far from every limit and no
	// LRU is kept.
	if ic := b.newestIdleLocked(); !fresh && ic != nil {
		if p.lru == nil && b.freshLocked(ic, now) && (!b.blocking || b.servesBlockingLocked(ic)) {
			if p.shares == 0 {
				// The handle is made after the lock is released: its
				// memory is most likely not cached in a pool of many
				// addresses, and a store that misses the cache would
				// hold up the unlock, a locked instruction, and so the
				// lock.
				got, probed := *ic, b.probing && ic.pc.probe.applies()
				c = b.carveLocked()
				b.countReuseLocked()
				b.popIdleLocked(ic)
				b.mu.Unlock()
				return b.fillReused(c, got, probed, now), nil, 0, nil
			}
			c = b.reuseLocked(ic, now)
			if p.shares > 0 && !c.has(probedBit) && p.validator == nil {
				b.adoptShareLocked(c, ic.pc)
			}
			b.popIdleLocked(ic)
			b.mu.Unlock()
			return c, nil, 0, nil
		}
	}
	b.topUp = true // the fast path above only serves addresses that had this path
	if p.needClock && !fresh && b.idleLenLocked() > 0 {
		// Judge the idle conns on an exact reading. Reading the clock is
		// no I/O; it costs what a short critical section does.
		now = p.readClock()
		b.now = max(b.now, now)
	}
	var discarded []io.Closer
	if b.blocking {
		// Checkouts waiting for values that were blocked come first.
		discarded = b.serveUnblockedLocked(discarded)
	}
	for !fresh {
		var ic idleConn
		if b.blocking {
			n := b.newestUnblockedLocked()
			if n < 0 {
				break // every idle value is still busy: they stay
			}
			ic = b.deleteIdleLocked(n)
		} else {
			newest := b.newestIdleLocked()
			if newest == nil {
				break
			}
			ic = *newest
			b.popIdleLocked(newest)
		}
		if reason := b.unusableLocked(&ic, now); reason != notCounted {
			// Past the idle timeout, the conns below are older: the
			// loop discards them too.
			discarded = b.discardLocked(discarded, ic.pc.v, reason)
			continue
		}
		c = b.reuseLocked(&ic, now)
		b.closeLaterLocked(discarded)
		b.mu.Unlock()
		return c, nil, 0, nil
	}
	if p.shares > 0 && !fresh {
		// Shared mode: an idle value, which has no lease, was the least
		// loaded; next comes a share of a value in use.
		if c = b.shareLocked(now); c != nil {
			b.closeLaterLocked(discarded)
			b.mu.Unlock()
			return c, nil, 0, nil
		}
	}
	if fresh && b.idleLenLocked() > 0 && !b.hasSlotLocked() {
		// New at the limit skips idle conns, which would otherwise hold
		// their slots until they expire (never, without a timeout). The
		// oldest makes room: its slot goes to the oldest waiter, this
		// checkout or one queued before it for the same reason, once its
		// Close returns.
		b.idleLocked()
		ic := b.deleteIdleLocked(0)
		reason := CloseForNew
		if ic.info.node != nil && p.lru.remove(ic.info.node) {
			reason = CloseIdleCapEvicted
		}
		discarded = b.discardLocked(discarded, ic.pc.v, reason)
	}
	b.closeLaterLocked(discarded)
	if b.hasSlotLocked() {
		b.dialing++
		gen = b.genLocked()
		b.mu.Unlock()
		return nil, nil, gen, nil
	}
	w = &waiter{ch: make(chan delivery, 1), fresh: fresh}
	cold := b.coldLocked()
	cold.waiters.pushBack(w)
	b.waiting++
	if !waited {
		cold.counters.WaitCount++
	}
	b.watchBlockedLocked()
	b.mu.Unlock()
	return nil, w, 0, nil
}

// unusableLocked takes ic, just taken off the idle stack, off the idle LRU
// and returns why it must be closed rather than handed out at the clock
// reading now: it was evicted from the LRU, or is past the idle timeout or
// its lifetime. It returns notCounted for a usable conn.
func (b *bucket) unusableLocked(ic *idleConn, now int64) CloseReason {
	p := b.pool
	switch {
	case ic.info.node != nil && p.lru.remove(ic.info.node):
		return CloseIdleCapEvicted
	case p.timeout > 0 && now-ic.since >= p.timeout:
		return CloseIdleTimeout
	case p.maxLifetime > 0 && now >= ic.pc.deadline:
		return CloseMaxLifetime
	}
	return notCounted
}

// closeLaterLocked closes conns taken out of service with discardLocked in
// a goroutine of their own, so that the checkout that found them does not
// wait on their Close; their slots are freed when it returns.
//
// The caller holds b.mu, b is not dropped, and the caller saw the pool open
// while holding b.mu. Pool.Close marks the pool closed, then locks every
// bucket that is not dropped, then waits for these goroutines; so it cannot
// start waiting before this one is counted.
func (b *bucket) closeLaterLocked(conns []io.Closer) {
	if len(conns) == 0 {
		return
	}
	b.pool.closers.Go(func() { _ = b.closeDiscarded(conns) }) // no caller to report to
}

// closeOffPathLocked closes conns taken out of service by a checkout: in
// the background while the pool is open (see closeLaterLocked), or else by
// returning them for the caller to close after releasing b.mu. The caller
// holds b.mu and b is not dropped.
func (b *bucket) closeOffPathLocked(conns []io.Closer) (closeNow []io.Closer) {
	if b.pool.closed.Load() {
		return conns
	}
	b.closeLaterLocked(conns)
	return nil
}

// discardLocked takes a conn out of service and counts why (reason may be
// nil). It does not touch the idle stack or the LRU. The caller passes the
// conn to closeDiscarded after the lock is released; its slot is freed then.
func (b *bucket) discardLocked(out []io.Closer, v io.Closer, reason CloseReason) []io.Closer {
	b.total--
	b.closing++
	b.countLocked(reason)
	b.checkLocked()
	return append(out, b.closingLocked(v, reason))
}

// closeDiscarded closes conns taken out of service with discardLocked and
// then frees their slots and reports them to the trace. It returns the
// last close error that is not nil. The caller holds no lock.
func (b *bucket) closeDiscarded(conns []io.Closer) error {
	if len(conns) == 0 { // the common case, inlined
		return nil
	}
	return b.closeEach(conns)
}

// closeEach serves closeDiscarded.
func (b *bucket) closeEach(conns []io.Closer) error {
	var err error
	for _, v := range conns {
		if e := v.Close(); e != nil {
			err = e
		}
	}
	b.freeClosed(len(conns))
	b.traceClosed(conns)
	return err
}

// freeClosed frees the slots of n discarded conns whose Close has returned.
func (b *bucket) freeClosed(n int) {
	b.mu.Lock()
	b.closing -= int32(n)
	b.checkLocked()
	b.grantSlotsLocked()
	b.mu.Unlock()
	b.pool.releaseTotal(n)
}

// emptyLocked reports whether nothing is bound to the bucket: no idle
// conns, none in use, no dial or close in flight and nobody waiting.
func (b *bucket) emptyLocked() bool {
	return b.idleLenLocked() == 0 && b.total == 0 && b.dialing == 0 && b.closing == 0 &&
		b.waitingLocked() == 0 && (b.cold == nil || len(b.cold.shared) == 0)
}

// dialFailedLocked ends a reserved dial that failed, freeing its slot and
// its slot of the WithMaxTotal cap.
func (b *bucket) dialFailedLocked() {
	b.coldLocked().counters.DialErrors++
	b.cancelDialLocked()
	b.pool.releaseTotal(1)
}

// cancelDialLocked gives back the slot of a reserved dial that ended
// without a conn before it took a slot of the WithMaxTotal cap.
func (b *bucket) cancelDialLocked() {
	b.dialing--
	b.checkLocked()
	b.grantSlotsLocked()
}

// dialedLocked ends a reserved dial that succeeded and binds the new conn to
// the bucket. It returns ErrClosed if the pool was closed meanwhile; the
// caller then passes pc.v to closeDiscarded.
func (b *bucket) dialedLocked(pc *pconn, now int64) error {
	b.dialing--
	b.countDialLocked()
	if now > b.now {
		b.now = now
	}
	if b.pool.closed.Load() {
		b.closing++ // for closeDiscarded
		b.checkLocked()
		return ErrClosed
	}
	b.total++
	if pc.probe.applies() {
		b.probing = true
	}
	if pc.probe.unblocks {
		b.blocking = true
	}
	if pc.gen == b.genLocked() {
		b.topUp = true // a checkout granted a slot after a Drain dials here
	}
	b.checkLocked()
	return nil
}

// adoptLocked takes in a conn dialed for a checkout that gave up meanwhile,
// or by Warm: it goes to a waiter or the idle stack like a returned conn.
func (b *bucket) adoptLocked(pc *pconn, now int64) (toClose []io.Closer, victim *lruNode) {
	if err := b.dialedLocked(pc, now); err != nil {
		return []io.Closer{b.closingLocked(pc.v, ClosePoolClosed)}, nil
	}
	return b.putLocked(pc, pc.info)
}

// put ends c, a handle of b whose holder called Close, and takes back its
// conn, or its lease on a shared value. It returns the socket's close error
// if the pool did not keep it, and ErrConnClosed if c had ended already.
func (b *bucket) put(c *Conn) error {
	p := b.pool
	now := p.coarse.Load()
	b.mu.Lock()
	// Plain accesses: every change of c.pc after carving is made under
	// b.mu, and a Close may not race with the handle's other methods (see
	// Conn.pc).
	pc := (*pconn)(c.pc)
	if pc == nil {
		b.mu.Unlock()
		return ErrConnClosed
	}
	c.pc = nil
	if p.maxLifetime > 0 && now >= pc.deadline-p.margin {
		// Judge the lifetime exactly, as Get does. Reading the clock is
		// no I/O.
		now = p.readClock()
	}
	if now > b.now {
		b.now = now
	}
	var toClose []io.Closer
	var victim *lruNode
	returned := true // the value went through putLocked: PutConn may report it
	if c.has(sharedBit) {
		toClose, victim, returned = b.unshareLocked(pc)
	} else {
		toClose, victim = b.putLocked(pc, c.info)
	}
	b.mu.Unlock()
	if victim != nil {
		victim.b.evict(victim)
	}
	err := b.closeDiscarded(toClose)
	if t := p.trace; returned && t != nil && t.PutConn != nil && !closes(toClose, pc) {
		t.PutConn(b.address)
	}
	return err
}

// putLocked places a conn that is open and bound to the bucket: to the
// oldest waiter, else on the idle stack, else it is closed. It returns the
// conns the caller must close, and an LRU victim in another bucket that the
// caller must evict, both after the lock is released.
//
// info is pc.info, passed in so that, with no limit in play, the common
// case of pushing onto the idle stack never reads pc itself.
func (b *bucket) putLocked(pc *pconn, info *connInfo) (toClose []io.Closer, victim *lruNode) {
	p := b.pool
	switch {
	case p.closed.Load():
		return b.discardLocked(nil, pc.v, notCounted), nil
	case b.drained && pc.gen != b.genLocked(): // reads pc and cold only once the address was drained
		return b.discardLocked(nil, pc.v, CloseDrained), nil
	case p.maxLifetime > 0 && b.now >= pc.deadline:
		return b.discardLocked(nil, pc.v, CloseMaxLifetime), nil
	case b.waitingLocked() > 0 && !pc.probe.blocked(pc.v) && b.handOffLocked(pc):
		return nil, nil
	case b.waitingLocked() > 0 && b.cold.waiters.firstForConn() == nil:
		// Only checkouts from New wait, and they need a slot to dial.
		return b.discardLocked(nil, pc.v, CloseForNew), nil
	case int(b.total) > p.capacity && b.idleLenLocked() >= p.capacity:
		// pc is counted in total and is not idle, so with total at most
		// the capacity there is room, and the stack's slice, behind a
		// pointer, need not be read to count the idle conns.
		return b.discardLocked(nil, pc.v, CloseBucketFull), nil
	}
	ic := idleConn{pc: pc, info: info, since: b.now}
	if p.lru != nil {
		info.node = &lruNode{b: b}
		victim = p.lru.add(info.node)
	}
	b.pushIdleLocked(ic)
	b.watchBlockedLocked() // a blocked value that checkouts wait for
	if victim != nil && victim.b == b {
		return b.evictLocked(nil, victim), nil
	}
	return nil, victim
}

// evict removes the conn of an LRU victim from this bucket and closes it,
// unless a Get or the cleaner removed it first.
func (b *bucket) evict(victim *lruNode) {
	b.mu.Lock()
	toClose := b.evictLocked(nil, victim)
	b.mu.Unlock()
	_ = b.closeDiscarded(toClose) // the conn that made room is fine; this one's error goes nowhere
}

func (b *bucket) evictLocked(out []io.Closer, victim *lruNode) []io.Closer {
	for i, ic := range b.idleLocked() {
		if ic.info.node == victim {
			b.deleteIdleLocked(i)
			return b.discardLocked(out, ic.pc.v, CloseIdleCapEvicted)
		}
	}
	return out
}

// release ends c, a handle of b whose holder called Release, and closes
// its conn; a shared value is closed when its last lease ends, or at once
// if now is set. It returns ErrConnClosed if c had ended already.
func (b *bucket) release(c *Conn, now bool) error {
	b.mu.Lock()
	pc := (*pconn)(c.pc) // see put
	if pc == nil {
		b.mu.Unlock()
		return ErrConnClosed
	}
	atomic.StorePointer(&c.pc, nil) // a Read may load it meanwhile
	var toClose []io.Closer
	if c.has(sharedBit) {
		toClose = b.breakShareLocked(pc, now)
	} else {
		toClose = b.discardLocked(nil, pc.v, CloseReleased)
	}
	b.mu.Unlock()
	return b.closeDiscarded(toClose)
}

// sweepLocked advances the bucket's clock to now and takes out the idle conns
// that have expired or were evicted; the caller closes them with
// closeDiscarded after releasing every lock.
func (b *bucket) sweepLocked(now int64) (discarded []io.Closer) {
	p := b.pool
	if now > b.now {
		b.now = now
	}
	if !b.busy {
		b.handles = nil
	}
	b.busy = false
	type discard struct {
		v      io.Closer
		reason CloseReason
	}
	var out []discard
	// judge returns why ic must go, or notCounted.
	judge := func(ic *idleConn) CloseReason {
		reason := notCounted
		switch {
		case p.timeout > 0 && now-ic.since >= p.timeout:
			reason = CloseIdleTimeout
		case p.maxLifetime > 0 && now >= ic.pc.deadline:
			reason = CloseMaxLifetime
		}
		if ic.info.node != nil {
			if reason != notCounted {
				if p.lru.remove(ic.info.node) {
					reason = CloseIdleCapEvicted
				}
			} else if p.lru.isEvicted(ic.info.node) {
				reason = CloseIdleCapEvicted
			}
		}
		return reason
	}
	// top is judged where it is, so that a sweep does not move it onto an
	// array that an address with one idle conn would otherwise never need.
	stack := b.stackLocked()
	kept := stack[:0]
	for _, ic := range stack {
		if reason := judge(&ic); reason == notCounted {
			kept = append(kept, ic)
		} else {
			out = append(out, discard{ic.pc.v, reason})
		}
	}
	clear(stack[len(kept):])
	b.setStackLocked(kept)
	if b.top.pc != nil {
		if reason := judge(&b.top); reason != notCounted {
			out = append(out, discard{b.top.pc.v, reason})
			b.top = idleConn{}
		}
	}
	for _, d := range out {
		discarded = b.discardLocked(discarded, d.v, d.reason)
	}
	return discarded
}

// drainLocked empties the bucket when the pool closes: it takes out every
// idle conn for the caller to close with closeDiscarded and wakes every
// waiter with ErrClosed.
func (b *bucket) drainLocked() []io.Closer {
	idle := b.takeIdleLocked()
	var out []io.Closer
	for _, ic := range idle {
		if ic.info.node != nil {
			b.pool.lru.remove(ic.info.node)
		}
		out = b.discardLocked(out, ic.pc.v, notCounted)
	}
	clear(idle)
	for b.waitingLocked() > 0 {
		b.wakeLocked(b.cold.waiters.first(), delivery{err: ErrClosed})
	}
	b.checkLocked()
	return out
}

// statsLocked reports the bucket's counts.
func (b *bucket) statsLocked() DestinationStats {
	d := DestinationStats{
		Address:  b.address,
		Total:    int64(b.total),
		Idle:     int64(b.idleLenLocked()),
		InUse:    int64(b.total) - int64(b.idleLenLocked()),
		Waiting:  int64(b.waitingLocked()),
		Counters: b.countersLocked(),
	}
	b.sharedStatsLocked(&d)
	return d
}

// checkLocked panics if the counts contradict each other, rather than let a
// miscount spread.
func (b *bucket) checkLocked() {
	max := b.pool.maxActive
	warming := b.warmingLocked()
	if int(b.total) < b.idleLenLocked() || int(b.dialing) < warming || warming < 0 || b.closing < 0 ||
		(max > 0 && int(b.total+b.dialing+b.closing) > max) {
		panic("connpool: bug: bucket " + b.address + " counts are inconsistent")
	}
}
