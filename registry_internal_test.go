package connpool

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/internal/testnet"
)

// Regression: a snapshot build that ran while the cleaner dropped buckets
// published a snapshot still holding them, and no later cut was ever made,
// so the dropped buckets stayed reachable for good. The interleaving is
// replayed step by step with the real functions: the build cut by a Get
// runs only after the cleaner's sweep.
func TestSnapshotForgetsBucketsDroppedDuringABuild(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newTestPool(t, &d, 4)
	r := &p.buckets

	const n = 64
	for i := range n {
		r.lookup("old:" + strconv.Itoa(i)) // empty buckets: the cleaner will drop them
	}

	// A Get of a new address: lookupSlow up to its r.mu.Unlock, with a cut.
	var rb *rebuild
	for i := 0; rb == nil; i++ {
		require.Less(t, i, 10*n, "no cut")
		r.mu.Lock()
		addr := "new:0" // a new address, then repeated lookups that miss the snapshot
		if r.getLocked(addr) == nil {
			r.setLocked(addr, newBucket(p, addr))
		}
		r.misses++
		rb = r.cutLocked() // as missedLocked does, but without starting the build
		r.mu.Unlock()
		if rb == nil {
			continue
		}
	}

	// The cleaner ticks while that build has not yet published: it drops
	// every bucket (all are empty).
	p.sweep(clock.read())
	// The preempted goroutine runs its build.
	r.build(rb)

	// The cleaner keeps ticking; no Get comes.
	for range 3 {
		p.sweep(clock.read())
	}
	r.builds.Wait()

	r.mu.Lock()
	all, misses := r.n, r.misses
	snap := r.read.Load().n
	r.mu.Unlock()
	t.Logf("entries %d, misses %d, snapshot entries %d", all, misses, snap)
	assert.Zero(t, all)
	assert.Zero(t, snap,
		"the snapshot keeps %d dropped buckets alive for good (misses %d > entries %d, but no cut is ever retried)",
		snap, misses, all)
}
