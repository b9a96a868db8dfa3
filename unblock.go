package connpool

import (
	"io"
	"time"
)

// Values with an Unblocked method (drpc conns, for one) may sit idle while
// still cancelling their previous call. A checkout skips them and takes
// the next idle value, or dials; they stay in the idle stack. A checkout
// that waits at the WithMaxActive limit while blocked values sit idle
// would then wait for a Close that may never come, so a goroutine watches
// the blocked values for it and hands them out as they unblock.

// unblockPoll is how often the watcher looks at the blocked values again
// even if the one it waits on has not unblocked: that one may have left
// the idle stack, and another may unblock first.
const unblockPoll = 10 * time.Millisecond

// connWaiterLocked reports whether the pool is open and a checkout that
// takes an idle value waits at the address.
func (b *bucket) connWaiterLocked() bool {
	return b.waitingLocked() > 0 && !b.pool.closed.Load() && b.cold.waiters.firstForConn() != nil
}

// newestUnblockedLocked returns the index of the most recently returned
// idle value that is not blocked, or -1 if every idle value is.
func (b *bucket) newestUnblockedLocked() int {
	idle := b.idleLocked()
	for i := len(idle) - 1; i >= 0; i-- {
		if pc := idle[i].pc; !pc.probe.blocked(pc.v) {
			return i
		}
	}
	return -1
}

// servesBlockingLocked reports whether a checkout at an address whose values
// may block can take ic, the newest idle value, on the fast path: it is not
// blocked, and no checkout waits, which would come first.
func (b *bucket) servesBlockingLocked(ic *idleConn) bool {
	return b.waitingLocked() == 0 && !ic.pc.probe.blocked(ic.pc.v)
}

// pruneBlockedLocked takes out of service, appending them to out, the
// blocked idle values whose Closed channel is closed: no checkout takes a
// blocked value, so without this a dead one would keep its slot until it
// unblocks, which a dead value need never do. Telling costs a channel
// receive, no I/O; a blocked value with no Closed method waits for the
// cleaner.
func (b *bucket) pruneBlockedLocked(out []io.Closer) []io.Closer {
	for i := len(b.idleLocked()) - 1; i >= 0; i-- {
		if pc := b.stackLocked()[i].pc; pc.probe.blocked(pc.v) && pc.probe.closed(pc.v) {
			out = b.removeIdleLocked(out, i, CloseDeadWhileIdle)
		}
	}
	return out
}

// watchBlockedLocked starts the watcher if checkouts that take idle values
// wait while blocked values sit idle, and none runs. The caller holds b.mu,
// b is not dropped (it has waiters or idle values), and the caller saw the
// pool open while holding b.mu; see closeLaterLocked for why Pool.Close
// then waits for the watcher.
func (b *bucket) watchBlockedLocked() {
	if b.blocking { // inlined: few addresses have values that block
		b.startWatchLocked()
	}
}

// startWatchLocked serves watchBlockedLocked.
func (b *bucket) startWatchLocked() {
	if b.idleLenLocked() == 0 || !b.connWaiterLocked() || b.cold.watching {
		return
	}
	b.cold.watching = true
	b.pool.closers.Go(b.watchBlocked)
}

// watchBlocked hands idle values to the waiting checkouts as they unblock,
// and takes those that die while blocked out of service, until no checkout
// that takes one waits, no blocked value is idle, or the pool closes.
func (b *bucket) watchBlocked() {
	poll := time.NewTimer(unblockPoll)
	defer poll.Stop()
	for {
		b.mu.Lock()
		if b.pool.needClock {
			// No checkout moved b.now while the values were blocked:
			// judge their limits on an exact reading.
			b.now = max(b.now, b.pool.readClock())
		}
		toClose := b.serveUnblockedLocked(nil)
		pc := b.watchedLocked()
		if pc == nil {
			b.cold.watching = false
		}
		b.mu.Unlock()
		_ = b.closeDiscarded(toClose) // expired or dead values; nobody to report to
		if pc == nil {
			return
		}
		var closed <-chan struct{}
		if pc.probe.closes {
			closed = pc.v.(closedNotifier).Closed()
		}
		poll.Reset(unblockPoll)
		select {
		case <-pc.v.(unblockNotifier).Unblocked():
		case <-closed:
		case <-poll.C:
		case <-b.pool.closing.Done():
			b.mu.Lock()
			b.cold.watching = false
			b.mu.Unlock()
			return
		}
	}
}

// serveUnblockedLocked hands the idle values that are not blocked, newest
// first, to the oldest waiters that take one, after taking the blocked
// values that died out of service. It appends to out, and returns, the
// values it took out of service, expired or dead, for the caller to close
// after releasing b.mu. The waiters check a value's liveness before using
// it, as any checkout of an idle value does.
func (b *bucket) serveUnblockedLocked(out []io.Closer) []io.Closer {
	out = b.pruneBlockedLocked(out)
	now := b.now
	for b.connWaiterLocked() {
		i := b.newestUnblockedLocked()
		if i < 0 {
			break
		}
		ic := b.deleteIdleLocked(i) // newestUnblockedLocked read the stack with idleLocked
		if reason := b.unusableLocked(&ic, now); reason != notCounted {
			out = b.discardLocked(out, ic.pc.v, reason)
			continue
		}
		w := b.cold.waiters.firstForConn()
		b.wakeLocked(w, delivery{c: b.reuseLocked(&ic, now), idle: true, since: ic.since})
	}
	return out
}

// watchedLocked returns the newest blocked idle value, whose channels the
// watcher waits on, if a checkout that takes idle values still waits, and
// nil otherwise: the watcher is done.
func (b *bucket) watchedLocked() *pconn {
	if !b.connWaiterLocked() {
		return nil
	}
	idle := b.idleLocked()
	for i := len(idle) - 1; i >= 0; i-- {
		if pc := idle[i].pc; pc.probe.blocked(pc.v) {
			return pc
		}
	}
	return nil
}
