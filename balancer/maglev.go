package balancer

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
)

// DefaultMaglevTableSize is the lookup table size of NewMaglev for up to
// 655 endpoints; larger sets get the next prime at least 100 times their
// size.
const DefaultMaglevTableSize = 65537

// Maglev is consistent hashing with Maglev's lookup table: requests with the
// same key (set with WithKey) go to the same endpoint, every endpoint owns
// an equal share of keys, and when the set changes few keys move. A request
// without a key goes to a random endpoint. An ejected endpoint's keys go to
// the next usable endpoint in address order. It ignores weights.
type Maglev struct {
	set   *endpointSet
	table atomic.Pointer[maglevTable]
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
	m.Update(endpoints)
	return m
}

// Pick returns the endpoint owning the request's key. Reading the key and
// hashing it takes no lock and allocates nothing.
func (m *Maglev) Pick(ctx context.Context) (string, func(error), error) {
	t := m.table.Load()
	if len(t.eps) == 0 {
		return "", noDone, ErrNoEndpoints
	}
	key, ok := KeyFrom(ctx)
	if !ok {
		return usable(t.eps, rand.IntN(len(t.eps))).pick()
	}
	slot := fnv1a(key) % uint64(len(t.slots))
	return usable(t.eps, int(t.slots[slot])).pick()
}

// Update replaces the endpoints and rebuilds the table before swapping it
// in, so picks never wait for a rebuild.
func (m *Maglev) Update(endpoints []Endpoint) {
	snap := m.set.update(endpoints)
	eps := slices.Clone(snap.eps)
	slices.SortFunc(eps, func(a, b *endpoint) int { return strings.Compare(a.address, b.address) })
	m.table.Store(buildMaglev(eps))
}

// States reports each endpoint's state.
func (m *Maglev) States() []State { return m.set.states() }

// buildMaglev fills a table by letting each endpoint, in turn, claim the
// next free slot of its own permutation of the slots (Maglev, NSDI 2016).
// Permutations derive from the address alone, never from its position.
func buildMaglev(eps []*endpoint) *maglevTable {
	t := &maglevTable{eps: eps}
	if len(eps) == 0 {
		return t
	}
	size := uint64(maglevSize(len(eps)))
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
