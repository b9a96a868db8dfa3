package connpool

import (
	"sync"
	"sync/atomic"
)

// registry maps addresses to buckets. Lookups of known addresses read an
// immutable snapshot behind an atomic pointer and take no lock. This is the
// read-mostly design of the original sync.Map, with string keys hashed
// natively, which halves the cost of a lookup on the hit path.
//
// The snapshot is a cache: a lookup that misses it, or finds a bucket the
// cleaner has dropped, goes to the authoritative map under the lock. It is
// rebuilt after as many misses and drops as the map has entries, so
// rebuilding costs O(1) amortised per change. The O(entries) copy runs in a
// goroutine of its own, outside the lock, from the previous snapshot and the
// log of changes made since, so no Get waits for it.
//
// Go maps never shrink, so once the authoritative map holds fewer than half
// the entries it once held, the cleaner copies it into a map of the right
// size; snapshots are built at the right size too. The memory of addresses
// that came and went is given back.
type registry struct {
	pool *Pool

	read atomic.Pointer[map[string]*bucket] // snapshot; never modified once stored

	mu      sync.Mutex         // protects the fields below; taken before bucket.mu
	all     map[string]*bucket // authoritative; holds every bucket not dropped
	peak    int                // the most entries all has held since it was made
	retired Counters           // counters of the buckets removed so far

	// log records every change made to all since the last snapshot was
	// cut, in order: a bucket added, or an address whose bucket was dropped.
	// Invariant: the last snapshot cut, with log applied, equals all.
	log        []change
	misses     int  // slow lookups and drops since the last snapshot was cut
	rebuilding bool // a goroutine is building the next snapshot

	// builds counts the goroutines building snapshots. They are started
	// under mu while the pool is open, and Pool.Close takes mu after
	// marking the pool closed, so it can wait for them.
	builds sync.WaitGroup
}

// change is one entry of registry.log: b was added under address, or, with
// b nil, the bucket of address was dropped.
type change struct {
	address string
	b       *bucket
}

// rebuild is a snapshot build that has been cut, to run outside the lock.
type rebuild struct {
	base *map[string]*bucket // the previous snapshot, or nil
	log  []change
	size int // len(all) at the cut: the entries the new snapshot will hold
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
	b := r.all[address]
	if b == nil {
		if r.all == nil {
			r.all = make(map[string]*bucket)
		}
		b = &bucket{address: address, pool: r.pool}
		r.all[address] = b
		r.peak = max(r.peak, len(r.all))
		r.log = append(r.log, change{address, b})
	}
	r.missedLocked(1)
	r.mu.Unlock()
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
	r.log = append(r.log, change{address: b.address})
	r.retired.add(b.countersLocked())
	return true
}

// missedLocked counts n misses and drops, and starts building a new
// snapshot once they outnumber the map's entries. The caller holds r.mu.
func (r *registry) missedLocked(n int) {
	r.misses += n
	if rb := r.cutLocked(); rb != nil {
		r.builds.Go(func() { r.build(rb) })
	}
}

// cutLocked cuts a new snapshot for build to make, if the misses and drops
// since the last cut outnumber the map's entries, no build is running and
// the pool is open; otherwise it returns nil. The caller holds r.mu.
func (r *registry) cutLocked() *rebuild {
	if r.misses <= len(r.all) || r.rebuilding || r.pool.closed.Load() {
		return nil
	}
	rb := &rebuild{base: r.read.Load(), log: r.log, size: len(r.all)}
	r.log = nil
	r.misses = 0
	r.rebuilding = true
	return rb
}

// build makes and publishes the snapshot cut by cutLocked. Misses and drops
// that came while it ran may call for the next cut at once, which it then
// builds too, so none is lost. The caller holds no lock.
func (r *registry) build(rb *rebuild) {
	for rb != nil {
		m := make(map[string]*bucket, rb.size)
		if rb.base != nil {
			for address, b := range *rb.base {
				m[address] = b
			}
		}
		for _, c := range rb.log {
			if c.b == nil {
				delete(m, c.address)
			} else {
				m[c.address] = c.b
			}
		}
		if rb.base != nil && len(*rb.base) > 2*len(m) {
			// m grew to hold the old entries the log then deleted, and maps
			// never shrink: copy it into one of the right size.
			m = sized(m)
		}
		r.mu.Lock()
		r.read.Store(&m)
		r.rebuilding = false
		rb = r.cutLocked()
		r.mu.Unlock()
	}
}

// shrinkLocked copies the map into one of the right size once it holds
// fewer than half the entries it once held. The copy costs O(entries) and
// follows at least as many deletions. The snapshot is not touched: its
// contents do not change. The caller holds r.mu.
func (r *registry) shrinkLocked() {
	if len(r.all) >= r.peak/2 {
		return
	}
	r.all = sized(r.all)
	r.peak = len(r.all)
}

// sized returns a copy of m in a map of the right size for its entries.
func sized(m map[string]*bucket) map[string]*bucket {
	c := make(map[string]*bucket, len(m))
	for address, b := range m {
		c[address] = b
	}
	return c
}
