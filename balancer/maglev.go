package balancer

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
)

// DefaultMaglevTableSize is the lookup table size of NewMaglev for up to
// 655 endpoints; larger sets get the next prime at least 100 times their
// size.
const DefaultMaglevTableSize = 65537

// Maglev is consistent hashing with Maglev's lookup table: requests with the
// same key (set with WithKey) go to the same endpoint, every endpoint owns
// an equal share of keys, and when the set changes few keys move. A request
// without a key goes to a random endpoint. An ejected endpoint's keys go
// where a table built without it would send them, spread over the others,
// while every other key stays where it is. It ignores weights and slow
// start.
type Maglev struct {
	set *endpointSet
}

// maglevView is the table of one snapshot.
type maglevView struct {
	full    *maglevTable // over every endpoint; kept while the set is unchanged
	owners  []*endpoint  // slot -> endpoint: full's owner, or, for a slot of an ejected endpoint, the owner in a table built without the ejected ones
	healthy []*endpoint  // for requests without a key
}

// maglevTable is an immutable lookup table with the endpoints it indexes,
// sorted by address.
type maglevTable struct {
	eps   []*endpoint
	slots []uint32 // slot -> index into eps
}

// NewMaglev returns a consistent-hashing balancer.
func NewMaglev(endpoints []Endpoint, opts ...Option) *Maglev {
	m := &Maglev{set: newEndpointSet(opts)}
	m.set.derive = deriveMaglev
	m.Update(endpoints)
	return m
}

// Pick returns the endpoint owning the request's key. Reading the key and
// hashing it takes no lock and allocates nothing.
func (m *Maglev) Pick(ctx context.Context) (string, func(error), error) {
	v, _ := m.set.snap.Load().view.(*maglevView)
	if v == nil || len(v.healthy) == 0 {
		return "", noDone, ErrNoEndpoints
	}
	key, ok := KeyFrom(ctx)
	if !ok {
		return v.healthy[rand.IntN(len(v.healthy))].pick()
	}
	return v.owners[fnv1a(key)%uint64(len(v.owners))].pick()
}

// Update replaces the endpoints and rebuilds the table before swapping it
// in, so picks never wait for a rebuild.
func (m *Maglev) Update(endpoints []Endpoint) { m.set.update(endpoints) }

// States reports each endpoint's state.
func (m *Maglev) States() []State { return m.set.states() }

// deriveMaglev builds next's table: the full table (kept from prev if the
// set did not change), with the slots of ejected endpoints taken from a
// table built over the healthy ones.
func deriveMaglev(prev, next *snapshot) {
	if len(next.all) == 0 {
		return
	}
	v := &maglevView{healthy: next.healthy}
	if pv, ok := prev.view.(*maglevView); ok && slices.Equal(prev.all, next.all) {
		v.full = pv.full
	} else {
		v.full = buildMaglev(sortedByAddress(next.all), maglevSize(len(next.all)))
	}
	v.owners = make([]*endpoint, len(v.full.slots))
	for slot, i := range v.full.slots {
		v.owners[slot] = v.full.eps[i]
	}
	if len(next.healthy) < len(next.all) {
		without := buildMaglev(sortedByAddress(next.healthy), len(v.owners)) // the same size, so slots match
		for slot, ep := range v.owners {
			if ep.ejected.Load() {
				v.owners[slot] = without.eps[without.slots[slot]]
			}
		}
	}
	next.view = v
}

func sortedByAddress(eps []*endpoint) []*endpoint {
	eps = slices.Clone(eps)
	slices.SortFunc(eps, func(a, b *endpoint) int { return strings.Compare(a.address, b.address) })
	return eps
}

// buildMaglev fills a table by letting each endpoint, in turn, claim the
// next free slot of its own permutation of the slots (Maglev, NSDI 2016).
// Permutations derive from the address alone, never from its position.
func buildMaglev(eps []*endpoint, tableSize int) *maglevTable {
	t := &maglevTable{eps: eps}
	size := uint64(tableSize)
	offset := make([]uint64, len(eps))
	skip := make([]uint64, len(eps))
	next := make([]uint64, len(eps))
	for i, ep := range eps {
		h := fnv1a(ep.address)
		offset[i] = h % size
		skip[i] = (h>>32|h<<32)%(size-1) + 1
	}
	const free = ^uint32(0)
	slots := make([]uint32, size)
	for i := range slots {
		slots[i] = free
	}
	for filled := uint64(0); ; {
		for i := range eps {
			c := (offset[i] + next[i]*skip[i]) % size
			for slots[c] != free {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % size
			}
			slots[c] = uint32(i)
			next[i]++
			if filled++; filled == size {
				t.slots = slots
				return t
			}
		}
	}
}

// maglevSize returns the table size for n endpoints: a prime, at least
// 100 × n and at least DefaultMaglevTableSize.
func maglevSize(n int) int {
	size := max(DefaultMaglevTableSize, 100*n)
	for !isPrime(size) {
		size++
	}
	return size
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// fnv1a is the 64-bit FNV-1a hash. It is the same in every process, so all
// clients map a key to the same endpoint.
func fnv1a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
