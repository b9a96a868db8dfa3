package balancer_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/balancer"
)

// Regression: re-admission reset the failures reported so far, but a
// request picked before the ejection that failed after the re-admission (a
// timeout outlasting a short ejection) still counted, so with a threshold of 2 a single fresh
// failure after the re-admission ejects the endpoint again.
func TestFailureOfARequestMadeBeforeTheEjectionIsForgotten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eps := endpoints(2)
		a := eps[0].Address
		rr := balancer.NewRoundRobin(eps, balancer.WithEjection(2, time.Second, time.Second))

		// A request to a, picked before the ejection, still in flight.
		var stale func(error)
		for stale == nil {
			addr, done, err := rr.Pick(context.Background())
			require.NoError(t, err)
			if addr == a {
				stale = done
			} else {
				done(nil)
			}
		}
		fail(t, rr, a, 2)
		require.True(t, state(rr.States(), a).Ejected, "two consecutive failures eject a")

		time.Sleep(2 * time.Second) // the ejection of 1 s ± 10% is over
		synctest.Wait()
		require.False(t, state(rr.States(), a).Ejected, "a is re-admitted")

		stale(errRequest) // the old request times out now
		fail(t, rr, a, 1) // one fresh failure after the re-admission, threshold 2
		s := state(rr.States(), a)
		assert.False(t, s.Ejected,
			"a is ejected again by one failure after its re-admission (threshold 2): the other counted is of a request made before the ejection (ConsecutiveFailures %d)", s.ConsecutiveFailures)
	})
}

// Regression: LeastRequest with no more endpoints than choices (and
// PeakEWMA with two endpoints) choose deterministically, so when slow start
// turned a ramping endpoint down and asked again, every choice was the same
// endpoint, which was kept anyway: slow start did nothing. A new choice now
// avoids the endpoint just turned down.
func TestSlowStartLimitsANewEndpointThatLooksBest(t *testing.T) {
	t.Run("LeastRequest", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			eps := endpoints(2)
			added := eps[1].Address
			lr := balancer.NewLeastRequest(eps[:1], balancer.WithSlowStart(time.Hour, 10, 1))
			for range 20 { // 20 long requests in flight on the old endpoint
				_, done, err := lr.Pick(context.Background())
				require.NoError(t, err)
				defer done(nil)
			}
			lr.Update(eps) // added joins at 10% of its weight for an hour
			counts := map[string]int{}
			for range 20 {
				addr, done, err := lr.Pick(context.Background())
				require.NoError(t, err)
				defer done(nil)
				counts[addr]++
			}
			assert.Less(t, counts[added], 10,
				"an endpoint ramping at 10%% takes %d of 20 new requests (%v), as many as without slow start", counts[added], counts)
		})
	})
	t.Run("PeakEWMA", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			eps := endpoints(2)
			added := eps[1].Address
			pe := balancer.NewPeakEWMA(eps[:1], balancer.WithSlowStart(time.Hour, 10, 1))
			_, done, err := pe.Pick(context.Background())
			require.NoError(t, err)
			time.Sleep(100 * time.Millisecond) // the old endpoint answers in 100 ms
			done(nil)
			pe.Update(eps) // added joins at 10% of its weight for an hour
			counts := map[string]int{}
			for range 100 {
				addr, done, err := pe.Pick(context.Background())
				require.NoError(t, err)
				time.Sleep(time.Millisecond)
				done(nil)
				counts[addr]++
			}
			assert.Less(t, counts[added], 50,
				"an endpoint ramping at 10%% takes %d of 100 requests (%v), as many as without slow start", counts[added], counts)
		})
	})
}
