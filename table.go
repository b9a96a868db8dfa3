package connpool

import (
	"hash/maphash"
	"math/bits"
)

// table is the registry's snapshot: an immutable hash table of buckets by
// address, read without a lock once published.
//
// It is a flat array of (hash, bucket) slots with linear probing, rather
// than a Go map, for the lookup on the hit path of a pool of many
// addresses: a Go map keeps its control bytes and its slots in separate
// cache lines of a group, so a lookup whose memory is not cached waits for
// two lines one after the other; here the probe usually ends in the line
// it started in, and the address itself is compared in the bucket, which
// the checkout reads next anyway. The table is sized for a load of at
// most maxLoadPercent, so a lookup probes a couple of slots on average.
//
// Invariants: slots holds every bucket once, at or after (cyclically) the
// slot its hash maps to, with no empty slot in between; nothing changes
// once the table is built.
type table struct {
	seed  maphash.Seed
	slots []slot
	n     int // buckets held
	// only is the bucket of a table that holds exactly one, which get
	// compares without hashing: a pool of one address, common in front of
	// a single server, pays no hash on its hit path.
	only *bucket
}

// slot is one entry of a table; b is nil in an empty slot.
type slot struct {
	hash uint64
	b    *bucket
}

// maxLoadPercent is the fullest a table is made.
const maxLoadPercent = 70

// newTable returns an empty table with room for n buckets.
func newTable(seed maphash.Seed, n int) *table {
	size := max(n*100/maxLoadPercent+1, 8)
	return &table{seed: seed, slots: make([]slot, size)}
}

// home returns the slot where the probe for hash starts: the hash scaled to
// the table's size, which needs no power-of-two size.
func (t *table) home(hash uint64) int {
	i, _ := bits.Mul64(hash, uint64(len(t.slots)))
	return int(i)
}

// add puts b in the table. Only the builder of a table calls it, before
// the table is published; b.address must not be in the table yet.
func (t *table) add(b *bucket) {
	h := maphash.String(t.seed, b.address)
	i := t.home(h)
	for t.slots[i].b != nil {
		if i++; i == len(t.slots) {
			i = 0
		}
	}
	t.slots[i] = slot{hash: h, b: b}
	t.n++
	t.only = nil
	if t.n == 1 {
		t.only = b
	}
}

// get returns the bucket of address, or nil.
func (t *table) get(address string) *bucket {
	if b := t.only; b != nil {
		if b.address == address {
			return b
		}
		return nil
	}
	return t.getHashed(maphash.String(t.seed, address), address)
}

// getHashed returns the bucket of address, whose hash is h, or nil.
func (t *table) getHashed(h uint64, address string) *bucket {
	for i := t.home(h); ; {
		s := &t.slots[i]
		if s.b == nil {
			return nil
		}
		if s.hash == h && s.b.address == address {
			return s.b
		}
		if i++; i == len(t.slots) {
			i = 0
		}
	}
}

// each calls f for every bucket in the table.
func (t *table) each(f func(*bucket)) {
	for _, s := range t.slots {
		if s.b != nil {
			f(s.b)
		}
	}
}
