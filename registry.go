package connpool

import (
	"maps"
	"sync"
	"sync/atomic"
)

// registry maps addresses to buckets. Lookups of known addresses read an
// immutable snapshot behind an atomic pointer and take no lock. The snapshot
// is rebuilt from the authoritative map after as many changes (slow lookups
// and dropped buckets) as the map has entries, so rebuilding costs O(1)
// amortised per change. This is the read-mostly design of the original
// sync.Map, with string keys hashed natively, which halves the cost of a
// lookup on the hit path.
//
// Go maps never shrink, so once the authoritative map holds fewer than half
// the entries it once held, the cleaner copies it into a map of the right
// size; the memory of addresses that came and went is then given back.
type registry struct {
	pool *Pool

	read atomic.Pointer[map[string]*bucket] // snapshot; never modified once stored

	mu      sync.Mutex         // protects the fields below; taken before bucket.mu
	all     map[string]*bucket // authoritative; holds every bucket not dropped
	peak    int                // the most entries all has held since it was made
	misses  int                // changes since the snapshot was taken
	retired Counters           // counters of the buckets removed so far
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
		r.peak = max(r.peak, len(r.all))
	}
	r.changedLocked(1)
	return b
}

// dropLocked forgets b if nothing is bound to it, keeping its counters in
// retired, and reports whether it did. The caller holds r.mu and b.mu.
func (r *registry) dropLocked(b *bucket) bool {
	if b.dropped || !b.emptyLocked() {
		return false
	}
	if r.all[b.address] != b {
		panic("connpool: bug: dropping unknown bucket " + b.address)
	}
	b.dropped = true
	delete(r.all, b.address)
	r.retired.add(b.counters)
	return true
}

// changedLocked counts n changes the snapshot does not show and rebuilds it
// once they are as many as the map's entries. The caller holds r.mu.
func (r *registry) changedLocked(n int) {
	r.misses += n
	if r.misses > len(r.all) {
		r.snapshotLocked()
	}
}

// shrinkLocked copies the map into one of the right size once it holds
// fewer than half the entries it once held. The copy costs O(entries) and
// follows at least as many deletions. The caller holds r.mu.
func (r *registry) shrinkLocked() {
	if len(r.all) >= r.peak/2 {
		return
	}
	m := make(map[string]*bucket, len(r.all))
	for address, b := range r.all {
		m[address] = b
	}
	r.all = m
	r.peak = len(m)
	r.snapshotLocked()
}

// snapshotLocked publishes a copy of the authoritative map. The caller holds
// r.mu.
func (r *registry) snapshotLocked() {
	m := maps.Clone(r.all)
	r.read.Store(&m)
	r.misses = 0
}
