package balancer

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression: a timed request outlived the decay time (slow, not
// abandoned), a later pick took its sample over, and its late done ended
// the newer sample, recording A's end minus B's start. Every request here
// takes 1.5 s, so whatever estimate is recorded must be about 1.5 s.
func TestPeakEWMALateDoneOfATakenOverSampleRecordsNoFalseLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pe := NewPeakEWMA([]Endpoint{{Address: "a"}}, WithDecay(time.Second))
		ep := pe.set.snap.Load().all[0]

		_, doneA, err := pe.Pick(t.Context()) // t=0, timed
		require.NoError(t, err)
		require.True(t, isSampleDone(doneA, ep))

		time.Sleep(1200 * time.Millisecond)
		_, doneB, err := pe.Pick(t.Context()) // t=1.2 s, takes the sample over
		require.NoError(t, err)
		require.True(t, isSampleDone(doneB, ep))

		time.Sleep(300 * time.Millisecond)
		doneA(nil) // t=1.5 s: A took 1.5 s
		time.Sleep(1200 * time.Millisecond)
		doneB(nil) // t=2.7 s: B took 1.5 s

		got := pe.States()[0].LatencyEWMA
		t.Logf("every request took 1.5s; estimate = %v", got)
		assert.InDelta(t, float64(1500*time.Millisecond), float64(got), float64(100*time.Millisecond),
			"estimate should be the latency of a request, not A's end minus B's start")
	})
}

// Regression, the worst case of the above: the late done came right after
// the takeover, the slow endpoint's estimate became 1 ns, and every pick
// rushed to it. The late done now records nothing.
func TestPeakEWMALateDoneAfterATakeoverDoesNotMakeASlowEndpointLookFree(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pe := NewPeakEWMA([]Endpoint{{Address: "slow"}}, WithDecay(time.Second))
		slow := pe.set.snap.Load().all[0]

		_, doneA, err := pe.Pick(t.Context()) // t=0, timed; the backend takes 1.5 s
		require.NoError(t, err)
		time.Sleep(1500 * time.Millisecond)
		_, doneB, err := pe.Pick(t.Context()) // t=1.5 s: takes the sample over
		require.NoError(t, err)
		require.True(t, isSampleDone(doneB, slow))
		doneA(nil) // t=1.5 s: A's answer arrives (it took 1.5 s)
		est := pe.States()[0].LatencyEWMA
		t.Logf("slow's estimate after A (1.5 s) answered: %v", est)
		assert.True(t, est == 0 || est > time.Second, "no estimate, or A's 1.5 s; got %v", est)

		// A second, fast endpoint measured at 10 ms joins.
		pe.Update([]Endpoint{{Address: "slow"}, {Address: "fast"}})
		fast := pe.set.snap.Load().all[1]
		fast.latency.observe(10*time.Millisecond, mono(), &pe.set.cfg.decay)

		toSlow := 0
		var dones []func(error)
		for range 100 {
			addr, done, err := pe.Pick(t.Context())
			require.NoError(t, err)
			if addr == "slow" {
				toSlow++
			}
			dones = append(dones, done)
		}
		t.Logf("%d of 100 concurrent picks went to the 1.5 s backend, against one measured at 10 ms", toSlow)
		assert.Less(t, toSlow, 50, "the slow backend should not get most of the picks")
		for _, d := range dones {
			d(ErrPickNotUsed)
		}
		doneB(nil)
	})
}

// Regression: after one request outlived the decay time, the timed dones
// stayed paired with the wrong starts for good under steady load, each
// timed request's done ending the next one's sample. Every request takes
// 10.5 ms; the estimate must stay near 10.5 ms.
func TestPeakEWMAOneLateDoneDoesNotShiftTheSamplesAfterIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			decay   = 200 * time.Millisecond
			latency = 10*time.Millisecond + 500*time.Microsecond
		)
		pe := NewPeakEWMA([]Endpoint{{Address: "a"}}, WithDecay(decay))
		ep := pe.set.snap.Load().all[0]
		var wg sync.WaitGroup
		lateDone := false
		var minEst, maxEst time.Duration
		for i := range 2000 { // one pick per ms for 2 s
			_, done, err := pe.Pick(t.Context())
			require.NoError(t, err)
			d := latency
			if i >= 100 && !lateDone && isSampleDone(done, ep) {
				lateDone = true
				d = decay + 5*time.Millisecond // one slow request, t=100 ms
			}
			wg.Go(func() {
				time.Sleep(d)
				done(nil)
			})
			time.Sleep(time.Millisecond)
			if i >= 1000 { // long after the late request
				est := pe.States()[0].LatencyEWMA
				if minEst == 0 || est < minEst {
					minEst = est
				}
				maxEst = max(maxEst, est)
			}
		}
		wg.Wait()
		require.True(t, lateDone)
		t.Logf("estimate in the last second: %v .. %v (every request but one took %v)", minEst, maxEst, latency)
		assert.InDelta(t, float64(latency), float64(minEst), float64(time.Millisecond))
	})
}
