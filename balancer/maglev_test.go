package balancer_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/balancer"
)

func ownerOf(t testing.TB, m *balancer.Maglev, key string) string {
	addr, done, err := m.Pick(balancer.WithKey(context.Background(), key))
	require.NoError(t, err)
	done(nil)
	return addr
}

func TestMaglevMapsAKeyToTheSameEndpoint(t *testing.T) {
	m := balancer.NewMaglev(endpoints(10))
	other := balancer.NewMaglev(endpoints(10)) // another client, same set
	for i := range 1000 {
		key := fmt.Sprintf("user:%d", i)
		first := ownerOf(t, m, key)
		assert.Equal(t, first, ownerOf(t, m, key))
		assert.Equal(t, first, ownerOf(t, other, key), "every client agrees")
	}
}

func TestMaglevOrderOfEndpointsDoesNotMatter(t *testing.T) {
	eps := endpoints(10)
	reversed := make([]balancer.Endpoint, len(eps))
	for i, ep := range eps {
		reversed[len(eps)-1-i] = ep
	}
	a, b := balancer.NewMaglev(eps), balancer.NewMaglev(reversed)
	for i := range 1000 {
		key := fmt.Sprint(i)
		assert.Equal(t, ownerOf(t, a, key), ownerOf(t, b, key))
	}
}

func TestMaglevRemovingOneOfTenMovesFewKeys(t *testing.T) {
	m := balancer.NewMaglev(endpoints(10))
	const keys = 20000
	before := make([]string, keys)
	for i := range keys {
		before[i] = ownerOf(t, m, fmt.Sprint("k", i))
	}
	removed := endpoints(10)[3].Address
	var rest []balancer.Endpoint
	for _, ep := range endpoints(10) {
		if ep.Address != removed {
			rest = append(rest, ep)
		}
	}
	m.Update(rest)

	moved, onOthers, stayed := 0, 0, 0
	for i := range keys {
		after := ownerOf(t, m, fmt.Sprint("k", i))
		if after != before[i] {
			moved++
		}
		if before[i] != removed {
			onOthers++
			if after == before[i] {
				stayed++
			}
		}
	}
	t.Logf("moved %.1f%% of keys; %.2f%% of keys on other backends stayed",
		100*float64(moved)/keys, 100*float64(stayed)/float64(onOthers))
	assert.LessOrEqual(t, float64(moved)/keys, 0.15)
	assert.GreaterOrEqual(t, float64(stayed)/float64(onOthers), 0.99)
}

func TestMaglevSpreadsKeysEvenly(t *testing.T) {
	m := balancer.NewMaglev(endpoints(10))
	counts := map[string]int{}
	const keys = 200000
	for i := range keys {
		counts[ownerOf(t, m, fmt.Sprint("key-", i))]++
	}
	for addr, c := range counts {
		// The table itself is even to one slot; sampled keys add noise of
		// about 0.7% here, so allow 5%.
		assert.InDelta(t, keys/10, c, keys/10*0.05, addr)
	}
	shares := balancer.MaglevShares(m)
	for addr, n := range shares {
		assert.InDelta(t, float64(balancer.DefaultMaglevTableSize)/10, n, float64(balancer.DefaultMaglevTableSize)/10*0.01,
			"%s owns %d slots", addr, n)
	}
}

func TestMaglevWithoutKeyPicksAtRandom(t *testing.T) {
	m := balancer.NewMaglev(endpoints(4))
	counts := picks(t, m, 4000)
	assert.Len(t, counts, 4)
}

// BenchmarkMaglevPick measures a keyed pick: reading the key from the
// context, hashing it and the table lookup, plus done.
func BenchmarkMaglevPick(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		m := balancer.NewMaglev(endpoints(n))
		ctx := balancer.WithKey(context.Background(), "user:1234567")
		b.Run(fmt.Sprintf("Endpoints=%d/Serial", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, done, _ := m.Pick(ctx)
				done(nil)
			}
		})
		b.Run(fmt.Sprintf("Endpoints=%d/Parallel", n), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_, done, _ := m.Pick(ctx)
					done(nil)
				}
			})
		})
	}
}

func TestMaglevPickAllocatesNothing(t *testing.T) {
	m := balancer.NewMaglev(endpoints(10))
	ctx := balancer.WithKey(context.Background(), "user:1")
	assert.Zero(t, testing.AllocsPerRun(1000, func() {
		_, done, _ := m.Pick(ctx)
		done(nil)
	}))
}

// Regression: an ejected endpoint's keys all went to one neighbour, which
// went from 20% to 40% of keys.
func TestMaglevSpreadsAnEjectedEndpointsKeysAsATableWithoutItWould(t *testing.T) {
	eps := endpoints(5)
	ejected := eps[2].Address
	m := balancer.NewMaglev(eps, balancer.WithEjection(1, time.Hour, time.Hour))
	var rest []balancer.Endpoint
	for _, ep := range eps {
		if ep.Address != ejected {
			rest = append(rest, ep)
		}
	}
	without := balancer.NewMaglev(rest)

	const keys = 20000
	before := make([]string, keys)
	for i := range keys {
		before[i] = ownerOf(t, m, fmt.Sprint("k", i))
	}
	for i := 0; !state(m.States(), ejected).Ejected; i++ {
		key := fmt.Sprint("k", i)
		_, done, err := m.Pick(balancer.WithKey(context.Background(), key))
		require.NoError(t, err)
		if before[i] == ejected {
			done(errRequest)
		} else {
			done(balancer.ErrPickNotUsed)
		}
	}

	counts := map[string]int{}
	for i := range keys {
		key := fmt.Sprint("k", i)
		after := ownerOf(t, m, key)
		counts[after]++
		if before[i] == ejected {
			assert.Equal(t, ownerOf(t, without, key), after, "key %s goes where a table without %s sends it", key, ejected)
		} else {
			assert.Equal(t, before[i], after, "key %s of a healthy endpoint stays", key)
		}
	}
	for addr, n := range counts {
		assert.LessOrEqual(t, float64(n)/keys, 1.25*0.25, "%s has %d of %d keys", addr, n, keys)
	}
}
