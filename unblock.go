package connpool

import (
	"io"
	"slices"
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
	for i := len(b.idle) - 1; i >= 0; i-- {
		if pc := b.idle[i].pc; !pc.probe.blocked(pc.v) {
			return i
		}
	}
	return -1
}

// watchBlockedLocked starts the watcher if checkouts that take idle values
// wait while blocked values sit idle, and none runs. The caller holds b.mu,
// b is not dropped (it has waiters or idle values), and the caller saw the
// pool open while holding b.mu; see closeLaterLocked for why Pool.Close
// then waits for the watcher.
func (b *bucket) watchBlockedLocked() {
	if !b.blocking || len(b.idle) == 0 || !b.connWaiterLocked() || b.cold.watching {
		return
	}
	b.cold.watching = true
	b.pool.closers.Go(b.watchBlocked)
}

// watchBlocked hands idle values to the waiting checkouts as they unblock,
// until no checkout that takes one waits, no blocked value is idle, or the
// pool closes.
func (b *bucket) watchBlocked() {
	poll := time.NewTimer(unblockPoll)
	defer poll.Stop()
	for {
		b.mu.Lock()
		toClose := b.serveUnblockedLocked()
		unblocked := b.blockedChanLocked()
		if unblocked == nil {
			b.cold.watching = false
		}
		b.mu.Unlock()
		_ = b.closeDiscarded(toClose) // expired values; nobody to report to
		if unblocked == nil {
			return
		}
		poll.Reset(unblockPoll)
		select {
		case <-unblocked:
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
// first, to the oldest waiters that take one, and returns those it found
// expired, for the caller to close after releasing b.mu.
func (b *bucket) serveUnblockedLocked() (toClose []io.Closer) {
	now := b.now
	for b.connWaiterLocked() {
		i := b.newestUnblockedLocked()
		if i < 0 {
			break
		}
		ic := b.idle[i]
		b.idle = slices.Delete(b.idle, i, i+1)
		if reason := b.unusableLocked(&ic, now); reason != notCounted {
			toClose = b.discardLocked(toClose, ic.pc.v, reason)
			continue
		}
		b.reuses++
		b.handOffLocked(ic.pc)
	}
	return toClose
}

// blockedChanLocked returns the Unblocked channel of the newest blocked
// idle value if a checkout that takes idle values still waits, and nil
// otherwise: the watcher is done.
func (b *bucket) blockedChanLocked() <-chan struct{} {
	if !b.connWaiterLocked() {
		return nil
	}
	for i := len(b.idle) - 1; i >= 0; i-- {
		if pc := b.idle[i].pc; pc.probe.blocked(pc.v) {
			return pc.v.(unblockNotifier).Unblocked()
		}
	}
	return nil
}
