package balancer_test

import (
	"cmp"
	"context"
	"math"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/balancer"
)

// loadResult is what a simulated load saw.
type loadResult struct {
	slowPicks int
	p99       time.Duration
}

// simulate sends requests from workers through b to five backends; the one
// named slow answers in 50 ms, the others in 1 ms. Run it in a synctest
// bubble, where sleeping moves a fake clock.
func simulate(t *testing.T, b balancer.Balancer, slow string) loadResult {
	t.Helper()
	latencies, slowPicks, err := sendLoad(b, slow, 8, 60, 50*time.Millisecond)
	require.NoError(t, err)
	return loadResult{slowPicks: slowPicks, p99: latencies[len(latencies)*99/100]}
}

// sendLoad sends requests from clients through b, each to a backend that
// answers in a millisecond, or in slowLatency if it is slow, and returns
// the latencies seen, sorted, with how many requests went to slow. Latency
// is simulated by sleeping: it is the workload, not synchronisation.
func sendLoad(b balancer.Balancer, slow string, clients, requests int, slowLatency time.Duration) ([]time.Duration, int, error) {
	var (
		mu        sync.Mutex
		latencies []time.Duration
		slowPicks int
		firstErr  error
		wg        sync.WaitGroup
	)
	for range clients {
		wg.Go(func() {
			for range requests {
				start := time.Now()
				addr, done, err := b.Pick(context.Background())
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
					return
				}
				if addr == slow {
					time.Sleep(slowLatency)
				} else {
					time.Sleep(time.Millisecond)
				}
				done(nil)
				mu.Lock()
				latencies = append(latencies, time.Since(start))
				if addr == slow {
					slowPicks++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(latencies)
	return latencies, slowPicks, firstErr
}

// The simulation runs in a synctest bubble: its clock moves only when every
// worker sleeps, so scheduling stalls of a loaded machine cannot turn a fast
// backend slow.
func TestPeakEWMAAvoidsTheSlowBackend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eps := endpoints(5)
		slow := eps[2].Address
		rr := simulate(t, balancer.NewRoundRobin(eps), slow)
		pe := balancer.NewPeakEWMA(eps)
		ewma := simulate(t, pe, slow)
		t.Logf("slow backend picks: round robin %d, peak EWMA %d; p99: round robin %v, peak EWMA %v",
			rr.slowPicks, ewma.slowPicks, rr.p99, ewma.p99)

		assert.Less(t, ewma.slowPicks*5, rr.slowPicks, "the slow backend gets far fewer requests")
		assert.Less(t, 3*ewma.p99, rr.p99, "p99 at least 3x lower than round robin's")
		s := state(pe.States(), slow)
		assert.GreaterOrEqual(t, s.LatencyEWMA, 40*time.Millisecond, "the slow backend's estimate")
	})
}

func TestPeakEWMAFollowsAPeakAtOnceAndDecaysAfter(t *testing.T) {
	pe := balancer.NewPeakEWMA(endpoints(1), balancer.WithDecay(50*time.Millisecond))
	pick := func(d time.Duration) {
		_, done, err := pe.Pick(context.Background())
		require.NoError(t, err)
		time.Sleep(d)
		done(nil)
	}
	pick(20 * time.Millisecond)
	peak := pe.States()[0].LatencyEWMA
	assert.GreaterOrEqual(t, peak, 20*time.Millisecond, "a peak is taken at once")
	time.Sleep(200 * time.Millisecond) // four decay periods
	pick(0)
	assert.Less(t, pe.States()[0].LatencyEWMA, peak/4, "a fast sample after a quiet spell pulls the estimate down")
}

// request picks from pe, holds the request for the latency latencyOf gives
// its address (sleeping: inside a synctest bubble this advances the fake
// clock), and ends it with success.
func request(t *testing.T, pe *balancer.PeakEWMA, latencyOf func(addr string) time.Duration) string {
	t.Helper()
	addr, done, err := pe.Pick(context.Background())
	require.NoError(t, err)
	time.Sleep(latencyOf(addr))
	done(nil)
	return addr
}

func constant(d time.Duration) func(string) time.Duration {
	return func(string) time.Duration { return d }
}

// Regression: with requests that finish at once, one of three endpoints got
// 0 of 300 picks: an unmeasured endpoint cost the default latency for ever.
func TestPeakEWMAGivesEveryEndpointTrafficWhenRequestsFinishAtOnce(t *testing.T) {
	for range 20 {
		counts := picks(t, balancer.NewPeakEWMA(endpoints(3)), 300)
		assert.Len(t, counts, 3, "every endpoint is picked: %v", counts)
	}
}

// Regression: an endpoint added by Update got 0 of 100,000 picks.
func TestPeakEWMATriesAnEndpointAddedByUpdate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pe := balancer.NewPeakEWMA(endpoints(1))
		for range 300 {
			request(t, pe, constant(time.Millisecond))
		}
		pe.Update(endpoints(2))
		added := 0
		for range 100 {
			if request(t, pe, constant(time.Millisecond)) == "10.0.0.1:80" {
				added++
			}
		}
		assert.Greater(t, added, 25, "the new endpoint is tried, then shares the load")
	})
}

// An endpoint with no measurement attracts the next request only while no
// request to it is in flight: concurrent clients do not all rush to a new
// endpoint before its first answer.
func TestPeakEWMADoesNotStampedeANewEndpoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pe := balancer.NewPeakEWMA(endpoints(3))
		for range 300 {
			request(t, pe, constant(time.Millisecond))
		}
		pe.Update(endpoints(4))
		var dones []func(error)
		added := 0
		for range 40 { // 40 requests in flight at once
			addr, done, err := pe.Pick(context.Background())
			require.NoError(t, err)
			dones = append(dones, done)
			if addr == "10.0.0.3:80" {
				added++
			}
		}
		assert.Equal(t, 1, added, "one request tries the new endpoint; the others wait for its answer")
		for _, done := range dones {
			done(nil)
		}
	})
}

// Regression: a backend that was slow for a while and then fast again got 0
// of 4,482 picks over the next 5 s with one client: its estimate never
// decayed without a new sample, and it never got one.
func TestPeakEWMARecoveredBackendRegainsHalfItsShareWithinTwoDecayTimes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const decay = time.Second
		pe := balancer.NewPeakEWMA(endpoints(3), balancer.WithDecay(decay))
		flaky := "10.0.0.1:80"
		slow := true
		latency := func(addr string) time.Duration {
			if addr == flaky && slow {
				return 20 * time.Millisecond
			}
			return time.Millisecond
		}
		for start := time.Now(); time.Since(start) < time.Second; {
			request(t, pe, latency)
		}
		slow = false
		recovered := time.Now()
		n, got := 0, 0
		for time.Since(recovered) < 2*decay {
			addr := request(t, pe, latency)
			if time.Since(recovered) >= decay {
				n++
				if addr == flaky {
					got++
				}
			}
		}
		share := float64(got) / float64(n)
		t.Logf("the recovered backend's share in the second decay time: %.3f (%d of %d)", share, got, n)
		assert.GreaterOrEqual(t, share, 0.5/3, "at least half its fair share")
	})
}

// The estimate decays when it is read, not only when a sample arrives: an
// endpoint measured at 4 ms becomes cheaper than one measured at 2 ms again
// and again once 4 ms × e^(-t/decay) < 2 ms, at t = ln 2 × decay.
func TestPeakEWMAEstimateDecaysWhenRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const decay = time.Second
		pe := balancer.NewPeakEWMA([]balancer.Endpoint{{Address: "a"}, {Address: "b"}}, balancer.WithDecay(decay))
		latency := func(addr string) time.Duration {
			if addr == "a" {
				return 4 * time.Millisecond
			}
			return 2 * time.Millisecond
		}
		var measuredA time.Time
		for i := 0; len(measured(pe)) < 2; i++ {
			require.Less(t, i, 100, "both endpoints are measured")
			if request(t, pe, latency) == "a" {
				measuredA = time.Now()
			}
		}
		for request(t, pe, latency) == "b" { // b stays fresh while a's estimate ages
			require.Less(t, time.Since(measuredA), decay, "a is never picked again")
		}
		assert.InDelta(t, math.Ln2*float64(decay), float64(time.Since(measuredA)), float64(10*time.Millisecond),
			"a is picked again once its estimate has decayed below b's")
	})
}

// measured returns the addresses with a latency estimate.
func measured(pe *balancer.PeakEWMA) []string {
	var out []string
	for _, s := range pe.States() {
		if s.LatencyEWMA > 0 {
			out = append(out, s.Address)
		}
	}
	return out
}
