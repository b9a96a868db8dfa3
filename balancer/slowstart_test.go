package balancer_test

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/balancer"
)

// slowStartPolicies are the policies that support slow start.
var slowStartPolicies = []struct {
	name string
	new  func([]balancer.Endpoint, ...balancer.Option) balancer.Balancer
}{
	{"RoundRobin", func(eps []balancer.Endpoint, opts ...balancer.Option) balancer.Balancer {
		return balancer.NewRoundRobin(eps, opts...)
	}},
	{"WeightedRoundRobin", func(eps []balancer.Endpoint, opts ...balancer.Option) balancer.Balancer {
		return balancer.NewWeightedRoundRobin(eps, opts...)
	}},
	{"Random", func(eps []balancer.Endpoint, opts ...balancer.Option) balancer.Balancer {
		return balancer.NewRandom(eps, opts...)
	}},
	{"LeastRequest", func(eps []balancer.Endpoint, opts ...balancer.Option) balancer.Balancer {
		return balancer.NewLeastRequest(eps, opts...)
	}},
	{"PeakEWMA", func(eps []balancer.Endpoint, opts ...balancer.Option) balancer.Balancer {
		return balancer.NewPeakEWMA(eps, opts...)
	}},
}

// sharePicks is how many picks a share is measured over.
const sharePicks = 10000

// shares returns each address's share of sharePicks sequential picks of b,
// each done at once with success. No time passes meanwhile in a bubble.
func shares(t testing.TB, b balancer.Balancer) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for addr, n := range picks(t, b, sharePicks) {
		out[addr] = float64(n) / sharePicks
	}
	return out
}

func TestSlowStartRampsUpAnEndpointAddedByUpdate(t *testing.T) {
	const window = time.Minute
	for _, p := range slowStartPolicies {
		t.Run(p.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				eps := endpoints(5)
				added := eps[4].Address
				b := p.new(eps[:4], balancer.WithSlowStart(window, 10, 1))
				for addr, share := range shares(t, b) {
					assert.InDelta(t, 0.25, share, 0.03, "%s: endpoints given to the constructor start with their fair share", addr)
				}

				b.Update(eps)
				atStart := shares(t, b)
				// Its weight is 10%: about 2.5% of picks, against 20%.
				assert.Less(t, atStart[added], 0.1, "at the start of its window the added endpoint gets well under its fair share of 20%%: %v", atStart)
				for _, ep := range eps[:4] {
					assert.Greater(t, atStart[ep.Address], 0.22, "%s, given to the constructor, does not ramp: %v", ep.Address, atStart)
				}

				time.Sleep(window / 2)
				atHalf := shares(t, b)
				// Its weight is 50%: about 11%.
				assert.Greater(t, atHalf[added], atStart[added]+0.04, "it ramps up: %.3f at the start, %.3f at half the window", atStart[added], atHalf[added])
				assert.Less(t, atHalf[added], 0.16, "at half the window it is still ramping: %v", atHalf)

				time.Sleep(window / 2)
				after := shares(t, b)
				for _, ep := range eps {
					assert.InDelta(t, 0.2, after[ep.Address], 0.03, "%s: after the window, shares are fair: %v", ep.Address, after)
				}
				t.Logf("share of the added endpoint: %.4f at the start, %.4f at half the window, %.4f after", atStart[added], atHalf[added], after[added])
			})
		})
	}
}

// A balancer built empty gets its first endpoints from an Update: they do
// not ramp, and one added later ramps against them.
func TestSlowStartSparesTheFirstEndpointsOfABalancerBuiltEmpty(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eps := endpoints(5)
		added := eps[4].Address
		rr := balancer.NewRoundRobin(nil, balancer.WithSlowStart(time.Minute, 10, 1))
		rr.Update(eps[:4])
		rr.Update(eps)
		got := shares(t, rr)
		assert.Less(t, got[added], 0.1, "the added endpoint ramps, the first four do not: %v", got)
	})
}

func TestSlowStartRampsUpAnEndpointReadmittedAfterAnEjection(t *testing.T) {
	const window = time.Minute
	for _, p := range slowStartPolicies {
		t.Run(p.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				eps := endpoints(5)
				bad := eps[2].Address
				b := p.new(eps, balancer.WithSlowStart(window, 10, 1), balancer.WithEjection(1, 10*time.Second, 10*time.Second))
				fail(t, b, bad, 1)
				s := state(b.(interface{ States() []balancer.State }).States(), bad)
				require.True(t, s.Ejected)

				time.Sleep(time.Until(s.EjectedUntil))
				synctest.Wait()
				readmitted := shares(t, b)
				assert.Positive(t, readmitted[bad], "re-admitted: %v", readmitted)
				assert.Less(t, readmitted[bad], 0.1, "a re-admitted endpoint starts well under its fair share of 20%%: %v", readmitted)

				time.Sleep(window)
				after := shares(t, b)
				assert.InDelta(t, 0.2, after[bad], 0.03, "after the window it has its fair share: %v", after)
			})
		})
	}
}

func TestSlowStartDoesNotApplyToMaglev(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eps := endpoints(5)
		added := eps[4].Address
		m := balancer.NewMaglev(eps[:4], balancer.WithSlowStart(time.Minute, 10, 1))
		m.Update(eps)
		plain := balancer.NewMaglev(eps)
		const keys = 5000
		ownedByAdded := 0
		for i := range keys {
			key := fmt.Sprint("key:", i)
			owner := ownerOf(t, m, key)
			require.Equal(t, ownerOf(t, plain, key), owner, "%s maps where it would without slow start", key)
			require.Equal(t, owner, ownerOf(t, m, key), "%s maps to the same endpoint every time", key)
			if owner == added {
				ownedByAdded++
			}
		}
		assert.InDelta(t, 0.2, float64(ownedByAdded)/keys, 0.03, "the added endpoint owns its share of keys at once")
	})
}

func TestSlowStartAggressionRampsFasterAtFirst(t *testing.T) {
	const window = time.Minute
	for _, p := range slowStartPolicies {
		t.Run(p.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				eps := endpoints(5)
				added := eps[4].Address
				linear := p.new(eps[:4], balancer.WithSlowStart(window, 10, 1))
				aggressive := p.new(eps[:4], balancer.WithSlowStart(window, 10, 2))
				linear.Update(eps)
				aggressive.Update(eps)

				time.Sleep(window / 4)
				// Weights 25% and 50%: shares of about 6% and 11%.
				l, a := shares(t, linear)[added], shares(t, aggressive)[added]
				assert.Greater(t, a, l+0.03, "at a quarter of the window: %.3f with aggression 2, %.3f with aggression 1", a, l)
				assert.Less(t, l, 0.09, "with aggression 1, a quarter of the way in, the weight is 25%%")
			})
		})
	}
}

func TestSlowStartEndsAfterTheWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window = time.Minute
		eps := endpoints(5)
		rr := balancer.NewRoundRobin(eps[:4], balancer.WithSlowStart(window, 10, 1))
		rr.Update(eps)
		time.Sleep(window - time.Second)
		assert.Less(t, shares(t, rr)[eps[4].Address], 0.2, "still ramping a second before the end")

		time.Sleep(time.Second)
		counts := picks(t, rr, 5*2000)
		for _, ep := range eps {
			assert.Equal(t, 2000, counts[ep.Address], "%s: once the window is over, round robin is exact again: %v", ep.Address, counts)
		}
	})
}

// Regression: the package's clock was negative inside a synctest bubble
// (whose clock starts in 2000 with no monotonic reading), and slow start
// took a negative end for "nothing ramping".
func TestSlowStartRampsFromTheStartOfASynctestBubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eps := endpoints(5)
		rr := balancer.NewRoundRobin(eps[:4], balancer.WithSlowStart(time.Minute, 10, 1))
		rr.Update(eps)
		counts := picks(t, rr, 10000)
		assert.Less(t, counts[eps[4].Address], 1000, "the added endpoint ramps up: %v", counts)
	})
}
