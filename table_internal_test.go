package connpool

import (
	"hash/maphash"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTableFindsEveryBucketAndNoOther(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 100, 1000} {
		tb := newTable(maphash.MakeSeed(), n)
		want := make(map[string]*bucket, n)
		for i := range n {
			b := &bucket{address: "10.0.0." + strconv.Itoa(i) + ":80"}
			tb.add(b)
			want[b.address] = b
		}
		require.Equal(t, n, tb.n)
		assert.Less(t, n, len(tb.slots), "a full table would make a miss probe forever")
		for a, b := range want {
			assert.Same(t, b, tb.get(a), "n=%d %s", n, a)
		}
		for i := range 200 {
			assert.Nil(t, tb.get("10.0.1."+strconv.Itoa(i)+":80"), "n=%d", n)
		}
		assert.Nil(t, tb.get(""))
		seen := 0
		tb.each(func(b *bucket) {
			assert.Same(t, want[b.address], b)
			seen++
		})
		assert.Equal(t, n, seen)
	}
}

// TestTableProbesPastCollisionsAndWraps lays out slots whose hashes are
// all equal and map to the last slot, as add would place them, so that
// lookups must compare addresses and wrap around the end of the array.
func TestTableProbesPastCollisionsAndWraps(t *testing.T) {
	tb := newTable(maphash.MakeSeed(), 5)
	const h = ^uint64(0) // home: the last slot
	last := len(tb.slots) - 1
	require.Equal(t, last, tb.home(h))
	for i := range 5 {
		tb.slots[(last+i)%len(tb.slots)] = slot{hash: h, b: &bucket{address: strconv.Itoa(i)}}
		tb.n++
	}
	for i := range 5 {
		got := tb.getHashed(h, strconv.Itoa(i))
		require.NotNil(t, got, "address %d", i)
		assert.Equal(t, strconv.Itoa(i), got.address)
	}
	assert.Nil(t, tb.getHashed(h, "5"))
}
