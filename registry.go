package connpool

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// registry maps addresses to buckets. Lookups of known addresses read an
// immutable snapshot behind an atomic pointer and take no lock. This is the
// read-mostly design of the original sync.Map, with a snapshot made for
// the lookup (table.go) rather than a map of interfaces.
//
// The authoritative map is not kept as a second full copy: it is the
// snapshot overlaid with the changes made since the snapshot was cut
// (building, then pending: a bucket added, or nil for an address whose
// bucket was dropped). A lookup that misses the snapshot, or finds a bucket
// the cleaner has dropped, consults the overlays under the lock. After as
// many misses and drops as the map has entries, the changes are cut and
// merged into a new snapshot, so rebuilding costs O(1) amortised per change.
// The O(entries) merge runs in a goroutine of its own, outside the lock, so
// no Get waits for it. Each snapshot is made at the size of its entries, so
// the memory of addresses that came and went is given back.
type registry struct {
	pool *Pool
	seed maphash.Seed // of every snapshot; set at creation

	read atomic.Pointer[table] // snapshot; never modified once stored

	mu sync.Mutex // protects the fields below; taken before bucket.mu

	// building holds the changes of the cut being merged into the next
	// snapshot (nil when no build runs), and pending the changes made
	// since. Invariant: *read overlaid with building, then pending, is the
	// authoritative map: every bucket that is not dropped, and only those.
	building map[string]*bucket
	pending  map[string]*bucket
	n        int // entries of the authoritative map

	// large is set while n exceeds batchedAddresses. It is written under
	// mu and read without it, on the hit path.
	large   atomic.Bool
	misses  int      // slow lookups and drops since the last cut
	retired Counters // counters of the buckets removed so far

	// builds counts the goroutines building snapshots. They are started
	// under mu while the pool is open, and Pool.Close takes mu after
	// marking the pool closed, so it can wait for them.
	builds sync.WaitGroup
}

// rebuild is a snapshot build that has been cut, to run outside the lock.
type rebuild struct {
	base    *table             // the previous snapshot, or nil
	changes map[string]*bucket // to apply to base; nil values delete
	size    int                // the entries the new snapshot will hold
}

// getLocked returns the bucket of address in the authoritative map, or nil.
// The caller holds r.mu.
func (r *registry) getLocked(address string) *bucket {
	if b, ok := r.pending[address]; ok {
		return b
	}
	if b, ok := r.building[address]; ok {
		return b
	}
	if t := r.read.Load(); t != nil {
		return t.get(address)
	}
	return nil
}

// setLocked records a change of the authoritative map: b added for
// address, or with b nil, the bucket of address dropped. The caller holds
// r.mu.
func (r *registry) setLocked(address string, b *bucket) {
	if r.pending == nil {
		r.pending = make(map[string]*bucket)
	}
	r.pending[address] = b
	if b != nil {
		r.n++
	} else {
		r.n--
	}
	r.large.Store(r.n > batchedAddresses)
}

// eachLocked calls f for every bucket of the authoritative map. The caller
// holds r.mu.
func (r *registry) eachLocked(f func(*bucket)) {
	if t := r.read.Load(); t != nil {
		t.each(func(b *bucket) {
			if _, ok := r.building[b.address]; ok {
				return
			}
			if _, ok := r.pending[b.address]; !ok {
				f(b)
			}
		})
	}
	for address, b := range r.building {
		if _, ok := r.pending[address]; !ok && b != nil {
			f(b)
		}
	}
	for _, b := range r.pending {
		if b != nil {
			f(b)
		}
	}
}

// sweepList returns what a sweep visits: the snapshot, which needs no lock
// to read, and the buckets added since it was cut. Some of the snapshot's
// buckets may have been dropped since; the sweep skips those.
func (r *registry) sweepList() (snapshot *table, added []*bucket) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range []map[string]*bucket{r.building, r.pending} {
		for _, b := range m {
			if b != nil {
				added = append(added, b)
			}
		}
	}
	return r.read.Load(), added
}

// lookup returns the bucket of address, creating it if needed. The snapshot
// may still hold a bucket the cleaner has dropped; callers find that out
// under the bucket's lock and call lookupSlow.
func (r *registry) lookup(address string) *bucket {
	if t := r.read.Load(); t != nil {
		if b := t.get(address); b != nil {
			return b
		}
	}
	return r.lookupSlow(address)
}

// lookupSlow returns the live bucket of address, creating it if needed.
func (r *registry) lookupSlow(address string) *bucket {
	r.mu.Lock()
	b := r.getLocked(address)
	if b == nil {
		b = newBucket(r.pool, address)
		r.setLocked(address, b)
	}
	r.missedLocked(1)
	r.mu.Unlock()
	return b
}

// dropLocked forgets b if nothing is bound to it, keeping its counters in
// retired, and reports whether it did. The caller holds r.mu and b.mu.
func (r *registry) dropLocked(b *bucket) bool {
	if b.dropped || !b.emptyLocked() || b.keptLocked() {
		return false
	}
	if r.getLocked(b.address) != b {
		panic("connpool: bug: dropping unknown bucket " + b.address)
	}
	b.dropped = true
	r.setLocked(b.address, nil)
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
	if r.misses <= r.n || r.building != nil || r.pool.closed.Load() {
		return nil
	}
	r.misses = 0
	if len(r.pending) == 0 {
		return nil // the snapshot is the whole map already
	}
	rb := &rebuild{base: r.read.Load(), changes: r.pending, size: r.n}
	r.building, r.pending = r.pending, nil
	return rb
}

// build makes and publishes the snapshot cut by cutLocked. Misses and drops
// that came while it ran may call for the next cut at once, which it then
// builds too, so none is lost. The caller holds no lock.
func (r *registry) build(rb *rebuild) {
	for rb != nil {
		buckets := make([]*bucket, 0, rb.size)
		if rb.base != nil {
			rb.base.each(func(b *bucket) {
				if _, changed := rb.changes[b.address]; !changed {
					buckets = append(buckets, b)
				}
			})
		}
		for _, b := range rb.changes {
			if b != nil {
				buckets = append(buckets, b)
			}
		}
		t := newTable(r.seed, len(buckets))
		for _, b := range buckets {
			t.add(b)
		}
		r.mu.Lock()
		r.read.Store(t)
		r.building = nil
		rb = r.cutLocked()
		r.mu.Unlock()
	}
}
