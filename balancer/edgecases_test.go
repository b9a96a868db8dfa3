package balancer_test

import (
	"math"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/balancer"
)

// Regression: the ejected-share cap was checked only when ejecting; an Update that shrinks the set keeps every ejection,
// so the share goes past it and the one healthy endpoint takes all traffic.
func TestEjectedShareCapHoldsAfterUpdateShrinksTheSet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eps := endpoints(4)
		rr := balancer.NewRoundRobin(eps, balancer.WithEjection(1, time.Hour, time.Hour))
		fail(t, rr, eps[0].Address, 1)
		fail(t, rr, eps[1].Address, 1)
		require.Len(t, ejectedAddrs(rr.States()), 2, "two of four ejected: at the cap of 50%")

		rr.Update(eps[:3]) // drop a healthy endpoint
		ejected := ejectedAddrs(rr.States())
		assert.LessOrEqual(t, float64(len(ejected)), 0.5*3,
			"after the Update, %d of 3 endpoints are ejected (%v), above the 50%% cap", len(ejected), ejected)
		counts := picks(t, rr, 300)
		assert.Less(t, counts[eps[2].Address], 300, "one endpoint takes every request: %v", counts)
	})
}

// Regression: weights above 2^30 are silently clamped to 2^30 before the
// greatest common divisor is taken, so 3:1 becomes 1:1.
func TestWeightedRoundRobinKeepsTheProportionOfLargeWeights(t *testing.T) {
	if strconv.IntSize < 64 {
		t.Skip("a weight of 3 << 30 needs a 64-bit int")
	}
	unit := 1 << 30 // a variable, so that the file builds where int has 32 bits
	w := balancer.NewWeightedRoundRobin([]balancer.Endpoint{
		{Address: "a", Weight: 3 * unit},
		{Address: "b", Weight: unit},
	})
	counts := picks(t, w, 4000)
	assert.Equal(t, map[string]int{"a": 3000, "b": 1000}, counts, "weights 3:1 give shares 3:1")
}

// Regression: with time.Duration(math.MaxInt64) for "until further notice",
// a positive jitter overflows the duration to a negative one (about one
// ejection in two), the re-admission timer fires at once and the endpoint
// is back in rotation immediately.
func TestEjectionWithTheLongestDurationDoesNotEndAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const forever = time.Duration(math.MaxInt64)
		for trial := range 64 { // each trial misses the bug with probability 1/2
			eps := endpoints(2)
			rr := balancer.NewRoundRobin(eps, balancer.WithEjection(1, forever, forever))
			fail(t, rr, eps[0].Address, 1)
			s := state(rr.States(), eps[0].Address)
			require.True(t, s.Ejected)
			ejectedUntil := s.EjectedUntil

			time.Sleep(time.Hour)
			synctest.Wait()
			s = state(rr.States(), eps[0].Address)
			if !assert.True(t, s.Ejected, "trial %d: an endpoint ejected for up to %v is back in rotation after an hour (EjectedUntil was %v, now %v)",
				trial, forever, ejectedUntil, time.Now()) {
				return
			}
		}
	})
}

// Regression: when most
// endpoints ramp (a scale-out: two old endpoints, eight added), the cap of
// four picks per request forces the fourth pick whatever its factor, and
// the ramping endpoints get far more than their weights: with factor 0.1,
// eight of them weigh 0.8 against 2 (a share of 2/2.8 = 71% for the old
// ones), but they receive about half of all requests.
func TestSlowStartGivesRampingEndpointsTheirReducedWeight(t *testing.T) {
	for _, p := range slowStartPolicies {
		t.Run(p.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				eps := endpoints(10)
				b := p.new(eps[:2], balancer.WithSlowStart(time.Minute, 10, 1))
				b.Update(eps) // eight endpoints join, each at 10% of its weight
				counts := picks(t, b, 20000)
				old := float64(counts[eps[0].Address]+counts[eps[1].Address]) / 20000
				assert.InDelta(t, 2/2.8, old, 0.05,
					"the two old endpoints should get 71%% of requests (weights 1, 1 against 8 × 0.1); they get %.1f%%: %v", 100*old, counts)
				for _, ep := range eps[2:] {
					share := float64(counts[ep.Address]) / 20000
					assert.Less(t, share, 2*0.1/2.8,
						"%s ramps at 10%% of its weight, a share of 3.6%%, but gets %.1f%%, over twice that: %v", ep.Address, 100*share, counts)
				}
			})
		})
	}
}
