package connpool

import (
	"maps"
	"sync"
	"sync/atomic"
)

// registry maps addresses to buckets. Lookups of known addresses read an
// immutable snapshot behind an atomic pointer and take no lock. The snapshot
// is rebuilt from the authoritative map after as many slow lookups as the map
// has entries, so rebuilding costs O(1) amortised per slow lookup. This is the
// read-mostly design of the original sync.Map, with string keys hashed
// natively, which halves the cost of a lookup on the hit path.
type registry struct {
	pool *Pool

	read atomic.Pointer[map[string]*bucket] // snapshot; never modified once stored

	mu      sync.Mutex         // protects the fields below; taken before bucket.mu
	all     map[string]*bucket // authoritative; holds no dropped bucket
	misses  int                // slow lookups since the snapshot was taken
	retired Counters           // counters of the buckets removed so far

	// draining holds buckets that Pool.Drain took out of all while conns
	// were still bound to them, until they are empty.
	draining map[*bucket]struct{}
}

// lookup returns the bucket of address, creating it if needed. The snapshot
// may still hold a bucket the cleaner has dropped; callers find that out
// under the bucket's lock and call lookupSlow.
func (r *registry) lookup(address string) *bucket {
	if m := r.read.Load(); m != nil {
		if b := (*m)[address]; b != nil {
			return b
		}
	}
	return r.lookupSlow(address)
}

// lookupSlow returns the live bucket of address, creating it if needed.
func (r *registry) lookupSlow(address string) *bucket {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.all[address]
	if b == nil {
		if r.all == nil {
			r.all = make(map[string]*bucket)
		}
		b = &bucket{address: address, pool: r.pool}
		r.all[address] = b
	}
	r.misses++
	if r.misses > len(r.all) {
		r.snapshotLocked()
	}
	return b
}

// removeLocked forgets b and keeps its counters in retired. The caller holds
// r.mu and b.mu and has marked b dropped.
func (r *registry) removeLocked(b *bucket) {
	if r.all[b.address] != b {
		panic("connpool: bug: removing unknown bucket " + b.address)
	}
	delete(r.all, b.address)
	r.retired.add(b.counters)
}

// finishDrain forgets a draining bucket once it is empty.
func (r *registry) finishDrain(b *bucket) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.draining[b]; !ok {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	r.forgetDrainedLocked(b)
}

// forgetDrainedLocked forgets a draining bucket if nothing is bound to it
// any more, keeping its counters in retired. The caller holds r.mu and b.mu.
func (r *registry) forgetDrainedLocked(b *bucket) {
	if !b.emptyLocked() {
		return
	}
	b.dropped = true
	delete(r.draining, b)
	r.retired.add(b.counters)
}

// snapshotLocked publishes a copy of the authoritative map. The caller holds
// r.mu.
func (r *registry) snapshotLocked() {
	m := maps.Clone(r.all)
	r.read.Store(&m)
	r.misses = 0
}
