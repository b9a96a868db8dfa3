package balancer_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed73091bf1/connpool/balancer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func endpoints(n int) []balancer.Endpoint {
	eps := make([]balancer.Endpoint, n)
	for i := range eps {
		eps[i] = balancer.Endpoint{Address: "10.0.0." + strconv.Itoa(i) + ":80"}
	}
	return eps
}

// picks counts the addresses of n picks.
func picks(t testing.TB, b balancer.Balancer, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for range n {
		addr, done, err := b.Pick(context.Background())
		require.NoError(t, err)
		done(nil)
		counts[addr]++
	}
	return counts
}

func TestValidateRejectsBadEndpoints(t *testing.T) {
	for _, tt := range []struct {
		name string
		eps  []balancer.Endpoint
		want string
	}{
		{"empty address", []balancer.Endpoint{{Address: ""}}, "empty address"},
		{"negative weight", []balancer.Endpoint{{Address: "a:1", Weight: -1}}, "negative weight -1"},
		{"duplicate", []balancer.Endpoint{{Address: "a:1"}, {Address: "a:1"}}, "given twice"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := balancer.Validate(tt.eps)
			assert.ErrorIs(t, err, balancer.ErrInvalidEndpoint)
			assert.ErrorContains(t, err, tt.want)
		})
	}
	assert.NoError(t, balancer.Validate(endpoints(3)))
}

func TestPoliciesReturnErrNoEndpointsWhenEmpty(t *testing.T) {
	for name, b := range map[string]balancer.Balancer{
		"RoundRobin":         balancer.NewRoundRobin(nil),
		"Random":             balancer.NewRandom(nil),
		"LeastRequest":       balancer.NewLeastRequest(nil),
		"WeightedRoundRobin": balancer.NewWeightedRoundRobin(nil),
		"PeakEWMA":           balancer.NewPeakEWMA(nil),
		"Maglev":             balancer.NewMaglev(nil),
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := b.Pick(context.Background())
			assert.ErrorIs(t, err, balancer.ErrNoEndpoints)
			// Invalid endpoints are left out, so this set is empty too.
			b.Update([]balancer.Endpoint{{Address: ""}, {Address: "x:1", Weight: -3}})
			_, _, err = b.Pick(context.Background())
			assert.ErrorIs(t, err, balancer.ErrNoEndpoints)
		})
	}
}

func TestRoundRobinGivesExactSharesOverAFullCycle(t *testing.T) {
	for _, n := range []int{1, 3, 7} {
		t.Run(fmt.Sprintf("Endpoints=%d", n), func(t *testing.T) {
			rr := balancer.NewRoundRobin(endpoints(n))
			counts := picks(t, rr, 100*n)
			require.Len(t, counts, n)
			for addr, c := range counts {
				assert.Equal(t, 100, c, addr)
			}
		})
	}
}

func TestRoundRobinStartsAtARandomEndpoint(t *testing.T) {
	firsts := map[string]bool{}
	for range 200 {
		rr := balancer.NewRoundRobin(endpoints(4))
		addr, _, err := rr.Pick(context.Background())
		require.NoError(t, err)
		firsts[addr] = true
	}
	// The chance that 200 random starts miss one of 4 endpoints is 4·(3/4)^200.
	assert.Len(t, firsts, 4, "fresh balancers must not all start at the first endpoint")
}

func TestRoundRobinUpdateReplacesTheSet(t *testing.T) {
	rr := balancer.NewRoundRobin(endpoints(3))
	rr.Update([]balancer.Endpoint{{Address: "new:1"}, {Address: "new:2"}})
	counts := picks(t, rr, 10)
	assert.Equal(t, map[string]int{"new:1": 5, "new:2": 5}, counts)
}

func TestRandomSpreadsPicks(t *testing.T) {
	r := balancer.NewRandom(endpoints(4))
	counts := picks(t, r, 40000)
	require.Len(t, counts, 4)
	for addr, c := range counts {
		// 10,000 expected; 6 standard deviations is about ±520.
		assert.InDelta(t, 10000, c, 1000, addr)
	}
}

func TestPicksAllocateNothing(t *testing.T) {
	ctx := context.Background()
	for name, b := range map[string]balancer.Balancer{
		"RoundRobin":         balancer.NewRoundRobin(endpoints(10)),
		"Random":             balancer.NewRandom(endpoints(10)),
		"LeastRequest":       balancer.NewLeastRequest(endpoints(10)),
		"WeightedRoundRobin": balancer.NewWeightedRoundRobin(endpoints(10)),
		"PeakEWMA":           balancer.NewPeakEWMA(endpoints(10)),
	} {
		allocs := testing.AllocsPerRun(1000, func() {
			_, done, _ := b.Pick(ctx)
			done(nil)
		})
		assert.Zero(t, allocs, name)
	}
}

func TestKeyTravelsInTheContext(t *testing.T) {
	_, ok := balancer.KeyFrom(context.Background())
	assert.False(t, ok)
	key, ok := balancer.KeyFrom(balancer.WithKey(context.Background(), "user:42"))
	assert.True(t, ok)
	assert.Equal(t, "user:42", key)
}

// BenchmarkPick measures Pick plus done at several endpoint counts.
func BenchmarkPick(b *testing.B) {
	ctx := context.Background()
	for _, policy := range policies {
		if policy.name == "Maglev" {
			continue // BenchmarkMaglevPick, with keys
		}
		for _, n := range []int{10, 100, 1000} {
			bal := policy.make(endpoints(n))
			name := fmt.Sprintf("%s/Endpoints=%d", policy.name, n)
			b.Run(name+"/Serial", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					_, done, _ := bal.Pick(ctx)
					done(nil)
				}
			})
			b.Run(name+"/Parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						_, done, _ := bal.Pick(ctx)
						done(nil)
					}
				})
			})
		}
	}
}

// maxOverMean loads balls into bins with b: each pick stays in flight, so
// the policy sees the load it made, and returns the most loaded bin's count
// over the mean.
func maxOverMean(t *testing.T, b balancer.Balancer, bins, balls int) float64 {
	t.Helper()
	counts := map[string]int{}
	var dones []func(error)
	for range balls {
		addr, done, err := b.Pick(context.Background())
		require.NoError(t, err)
		counts[addr]++
		dones = append(dones, done)
	}
	for _, done := range dones {
		done(nil)
	}
	most := 0
	for _, c := range counts {
		most = max(most, c)
	}
	return float64(most) / (float64(balls) / float64(bins))
}

func TestLeastRequestBalancesLoadBetterThanRandom(t *testing.T) {
	const bins, balls = 100, 1000
	lr := maxOverMean(t, balancer.NewLeastRequest(endpoints(bins)), bins, balls)
	rnd := maxOverMean(t, balancer.NewRandom(endpoints(bins)), bins, balls)
	t.Logf("max/mean: least request %.2f, random %.2f", lr, rnd)
	assert.Less(t, lr, rnd)
	assert.LessOrEqual(t, lr, 1.5, "two choices keep the fullest bin near the mean")
}

func TestLeastRequestComparesBothOfTwoEndpoints(t *testing.T) {
	lr := balancer.NewLeastRequest(endpoints(2))
	_, doneA, err := lr.Pick(context.Background())
	require.NoError(t, err)
	// The other endpoint is idle, so every pick goes there until it is
	// equally loaded.
	addr, doneB, err := lr.Pick(context.Background())
	require.NoError(t, err)
	first := state(lr.States(), addr)
	assert.EqualValues(t, 1, first.InFlight)
	for _, s := range lr.States() {
		assert.EqualValues(t, 1, s.InFlight)
	}
	doneA(nil)
	doneB(nil)
}

// Regression: with two endpoints LeastRequest broke every tie towards the
// first, which got 300 of 300 sequential picks.
func TestLeastRequestBreaksTiesAtRandom(t *testing.T) {
	for _, n := range []int{2, 5} {
		lr := balancer.NewLeastRequest(endpoints(n))
		counts := map[string]int{}
		const picks = 2000
		for range picks {
			addr, done, err := lr.Pick(context.Background())
			require.NoError(t, err)
			done(nil) // requests that finish at once: every pick is a tie
			counts[addr]++
		}
		fair := picks / n
		for addr, c := range counts {
			// Binomial: at n = 2 the standard deviation is about 22 picks.
			assert.InDelta(t, fair, c, float64(fair)/4, "%d endpoints: %s got %d of %d picks", n, addr, c, picks)
		}
		assert.Len(t, counts, n, "every endpoint gets picks")
	}
}

func TestLeastRequestWithMoreChoicesFindsTheIdleEndpoint(t *testing.T) {
	const n = 10
	for _, tt := range []struct {
		name    string
		choices int
		minHits int // of 200 picks that find the one idle endpoint
		maxHits int
	}{
		{name: "10 choices compare all", choices: 10, minHits: 200, maxHits: 200},
		{name: "clamped to 10", choices: 50, minHits: 200, maxHits: 200},
		{name: "2 choices find it about a fifth of the time", choices: 2, minHits: 10, maxHits: 90},
		{name: "clamped to 2", choices: 0, minHits: 10, maxHits: 90},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lr := balancer.NewLeastRequest(endpoints(n), balancer.WithChoices(tt.choices))
			// Load every endpoint but one with a request in flight.
			var dones []func(error)
			busy := map[string]bool{}
			for len(busy) < n-1 {
				addr, done, err := lr.Pick(context.Background())
				require.NoError(t, err)
				if busy[addr] {
					done(balancer.ErrPickNotUsed)
					continue
				}
				busy[addr] = true
				dones = append(dones, done)
			}
			hits := 0
			for range 200 {
				addr, done, err := lr.Pick(context.Background())
				require.NoError(t, err)
				if !busy[addr] {
					hits++
				}
				done(balancer.ErrPickNotUsed)
			}
			assert.GreaterOrEqual(t, hits, tt.minHits)
			assert.LessOrEqual(t, hits, tt.maxHits)
			for _, done := range dones {
				done(nil)
			}
		})
	}
}
