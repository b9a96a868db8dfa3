package balancer_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/balancer"
)

var errRequest = errors.New("request failed")

// fail reports n failures for addr, picking until addr comes up.
func fail(t *testing.T, b balancer.Balancer, addr string, n int) {
	t.Helper()
	for n > 0 {
		got, done, err := b.Pick(context.Background())
		require.NoError(t, err)
		if got == addr {
			done(errRequest)
			n--
		} else {
			done(nil)
		}
	}
}

func state(states []balancer.State, addr string) balancer.State {
	for _, s := range states {
		if s.Address == addr {
			return s
		}
	}
	return balancer.State{}
}

func TestEjectionAfterConsecutiveFailuresAndReadmission(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rr := balancer.NewRoundRobin(endpoints(4), balancer.WithEjection(3, time.Second, 10*time.Second))
		dead := "10.0.0.2:80"
		fail(t, rr, dead, 3)
		s := state(rr.States(), dead)
		require.True(t, s.Ejected)
		assert.WithinDuration(t, time.Now().Add(time.Second), s.EjectedUntil, 100*time.Millisecond+time.Nanosecond)

		counts := picks(t, rr, 300)
		assert.Zero(t, counts[dead], "an ejected endpoint is not picked")
		assert.Len(t, counts, 3)

		time.Sleep(1100 * time.Millisecond) // past base plus the 10% jitter
		synctest.Wait()
		assert.False(t, state(rr.States(), dead).Ejected, "re-admitted when its time is up")

		// Failing again before any success: the second ejection lasts twice
		// as long.
		fail(t, rr, dead, 3)
		s = state(rr.States(), dead)
		require.True(t, s.Ejected)
		assert.Equal(t, int64(2), s.Ejections, "each ejection counted")
		assert.WithinDuration(t, time.Now().Add(2*time.Second), s.EjectedUntil, 200*time.Millisecond+time.Nanosecond)
		time.Sleep(2200 * time.Millisecond)
		synctest.Wait()
		assert.False(t, state(rr.States(), dead).Ejected)
		assert.Equal(t, 100, picks(t, rr, 400)[dead], "picked again in turn")
	})
}

func TestSuccessResetsTheFailureCount(t *testing.T) {
	rr := balancer.NewRoundRobin(endpoints(2), balancer.WithEjection(3, time.Hour, time.Hour))
	addr := "10.0.0.0:80"
	fail(t, rr, addr, 2)
	assert.EqualValues(t, 2, state(rr.States(), addr).ConsecutiveFailures)
	for {
		got, done, err := rr.Pick(context.Background())
		require.NoError(t, err)
		done(nil)
		if got == addr {
			break
		}
	}
	fail(t, rr, addr, 2)
	assert.False(t, state(rr.States(), addr).Ejected, "2 + 2 failures with a success between do not eject")
}

func TestAtMostTheAllowedShareIsEjected(t *testing.T) {
	rr := balancer.NewRoundRobin(endpoints(4), balancer.WithEjection(1, time.Hour, time.Hour))
	for _, ep := range endpoints(4) {
		fail(t, rr, ep.Address, 1)
	}
	ejected := 0
	for _, s := range rr.States() {
		if s.Ejected {
			ejected++
		}
	}
	assert.Equal(t, 2, ejected, "the default share is half")
}

func TestPanicModeIgnoresHealthWhenEverythingIsEjected(t *testing.T) {
	for name, b := range map[string]balancer.Balancer{
		"RoundRobin": balancer.NewRoundRobin(endpoints(3), balancer.WithEjection(1, time.Hour, time.Hour), balancer.WithMaxEjectedShare(1)),
		"Random":     balancer.NewRandom(endpoints(3), balancer.WithEjection(1, time.Hour, time.Hour), balancer.WithMaxEjectedShare(1)),
	} {
		t.Run(name, func(t *testing.T) {
			for _, ep := range endpoints(3) {
				fail(t, b, ep.Address, 1)
			}
			counts := picks(t, b, 30)
			assert.Len(t, counts, 3, "every endpoint is still picked rather than failing")
		})
	}
}

func TestUpdateKeepsTheStateOfKeptAddresses(t *testing.T) {
	rr := balancer.NewRoundRobin(endpoints(4), balancer.WithEjection(1, time.Hour, time.Hour))
	kept := "10.0.0.1:80"
	fail(t, rr, kept, 1)
	require.True(t, state(rr.States(), kept).Ejected)

	rr.Update([]balancer.Endpoint{{Address: kept}, {Address: "10.0.0.3:80"}, {Address: "new:80", Weight: 2}})
	assert.True(t, state(rr.States(), kept).Ejected, "ejection survives the update")
	assert.Equal(t, 2, state(rr.States(), "new:80").Weight)
	assert.Zero(t, picks(t, rr, 30)[kept])
}

// Regression: concurrent failures could pass the ejected-share check
// together (6 of 10 endpoints ejected with a cap of 5).
func TestEjectionCapHoldsUnderConcurrentFailures(t *testing.T) {
	for round := range 200 {
		b := balancer.NewRoundRobin(endpoints(10), balancer.WithEjection(1, time.Hour, time.Hour))
		var dones []func(error)
		for range 10 { // round robin: each endpoint once
			_, done, err := b.Pick(context.Background())
			require.NoError(t, err)
			dones = append(dones, done)
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		for _, done := range dones {
			wg.Go(func() {
				<-start
				done(errRequest)
			})
		}
		close(start)
		wg.Wait()
		ejected := 0
		for _, s := range b.States() {
			if s.Ejected {
				ejected++
			}
		}
		require.LessOrEqual(t, ejected, 5, "round %d: more than half of the endpoints ejected", round)
	}
}

// Regression: a failure reported after Update removed its endpoint ejected
// that endpoint, using up the ejected-share budget until its timer fired.
func TestRemovedEndpointCannotBeEjected(t *testing.T) {
	b := balancer.NewRoundRobin([]balancer.Endpoint{{Address: "a:1"}, {Address: "b:1"}},
		balancer.WithEjection(1, time.Hour, time.Hour))
	var doneA func(error)
	for doneA == nil {
		addr, done, err := b.Pick(context.Background())
		require.NoError(t, err)
		if addr == "a:1" {
			doneA = done
		} else {
			done(nil)
		}
	}
	b.Update([]balancer.Endpoint{{Address: "b:1"}, {Address: "c:1"}})
	doneA(errRequest) // late: a:1 is gone

	fail(t, b, "b:1", 1)
	assert.True(t, state(b.States(), "b:1").Ejected, "the budget (1 of 2) must still be free for b:1")
}

// Regression: WithEjection with a negative time panicked later, inside
// done, on the request path.
func TestWithEjectionClampsTimesWhenTheBalancerIsBuilt(t *testing.T) {
	b := balancer.NewRoundRobin(endpoints(2), balancer.WithEjection(1, -time.Second, -time.Hour))
	assert.NotPanics(t, func() { fail(t, b, endpoints(2)[0].Address, 1) })
	assert.True(t, state(b.States(), endpoints(2)[0].Address).Ejected)
}

// Regression: States read an endpoint's weight while Update wrote it.
func TestStatesDoesNotRaceWithUpdate(t *testing.T) {
	b := balancer.NewWeightedRoundRobin(endpoints(3))
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 200 {
			eps := endpoints(3)
			eps[0].Weight = 1 + i%7
			b.Update(eps)
		}
	})
	wg.Go(func() {
		for range 200 {
			_ = b.States()
		}
	})
	wg.Wait()
}

// Regression: an ejected endpoint's share went to the endpoint after it, so
// with five endpoints and one ejected, round robin and random gave that
// neighbour 40% instead of 25%, and WRR 5:1:1 with the heavy one ejected
// gave 6,000 of 7,000 picks to one endpoint.
func TestEjectedShareIsSpreadOverTheHealthyEndpointsByWeight(t *testing.T) {
	eject := balancer.WithEjection(1, time.Hour, time.Hour)
	weighted := []balancer.Endpoint{{Address: "a:1", Weight: 5}, {Address: "b:1", Weight: 1}, {Address: "c:1", Weight: 1}}
	wrr := []balancer.Endpoint{{Address: "a:1", Weight: 4}, {Address: "b:1", Weight: 2}, {Address: "c:1", Weight: 1}, {Address: "d:1", Weight: 1}}
	for _, tt := range []struct {
		name    string
		b       balancer.Balancer
		ejected string
		fair    map[string]float64 // share of each healthy endpoint
	}{
		{"RoundRobin", balancer.NewRoundRobin(endpoints(5), eject), "10.0.0.2:80", evenly(endpoints(5), "10.0.0.2:80")},
		{"Random", balancer.NewRandom(endpoints(5), eject), "10.0.0.2:80", evenly(endpoints(5), "10.0.0.2:80")},
		{"LeastRequest", balancer.NewLeastRequest(endpoints(5), eject), "10.0.0.2:80", evenly(endpoints(5), "10.0.0.2:80")},
		{"WeightedRoundRobin/Uniform", balancer.NewWeightedRoundRobin(endpoints(5), eject), "10.0.0.2:80", evenly(endpoints(5), "10.0.0.2:80")},
		{"WeightedRoundRobin/HeavyEjected", balancer.NewWeightedRoundRobin(weighted, eject), "a:1", map[string]float64{"b:1": 0.5, "c:1": 0.5}},
		{"WeightedRoundRobin/ByWeight", balancer.NewWeightedRoundRobin(wrr, eject), "b:1", map[string]float64{"a:1": 4.0 / 6, "c:1": 1.0 / 6, "d:1": 1.0 / 6}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fail(t, tt.b, tt.ejected, 1)
			require.True(t, state(tt.b.(interface{ States() []balancer.State }).States(), tt.ejected).Ejected)
			const n = 12000
			counts := picks(t, tt.b, n)
			assert.Zero(t, counts[tt.ejected])
			for addr, fair := range tt.fair {
				share := float64(counts[addr]) / n
				assert.LessOrEqual(t, share, 1.25*fair, "%s: share %.3f, fair %.3f (%v)", addr, share, fair, counts)
				assert.GreaterOrEqual(t, share, 0.75*fair, "%s: share %.3f, fair %.3f (%v)", addr, share, fair, counts)
			}
		})
	}
}

// evenly returns an equal share for each endpoint but the ejected one.
func evenly(eps []balancer.Endpoint, ejected string) map[string]float64 {
	out := map[string]float64{}
	for _, ep := range eps {
		if ep.Address != ejected {
			out[ep.Address] = 1 / float64(len(eps)-1)
		}
	}
	return out
}
