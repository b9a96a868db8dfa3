package balancer

import (
	"reflect"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Reads that come further apart than slowGap are exact: a client with few
// requests gets the precision of the clock.
func TestCoarseClockIsExactWhenReadsAreSparse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c coarseClock
		for range 100 {
			time.Sleep(2 * slowGap)
			got, fresh := c.now()
			require.True(t, fresh)
			require.Equal(t, mono(), got)
		}
	})
}

// Back-to-back reads return the last reading for most calls, never run
// ahead of the clock or backwards, and catch up after a quiet spell, after
// which reads are exact again.
func TestCoarseClockCatchesUpAfterAQuietSpell(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c coarseClock
		for range 1000 { // the fake clock stands still: readings 0 ns apart
			c.now()
		}
		require.Equal(t, uint64(maxEvery), c.every.Load(), "back-to-back reads read the clock 1 in %d times", maxEvery)
		before, _ := c.now()
		time.Sleep(time.Second)
		stale, last := 0, before
		for {
			got, _ := c.now()
			require.GreaterOrEqual(t, got, last, "the clock never goes back")
			require.LessOrEqual(t, got, mono(), "the clock never runs ahead")
			last = got
			if got == mono() {
				break
			}
			stale++
			require.Less(t, stale, 500, "a read reads the clock at random, one in %d", maxEvery)
		}
		time.Sleep(time.Microsecond)
		got, _ := c.now()
		assert.Equal(t, mono(), got, "after a reading a second apart from the last, reads are exact")
	})
}

// A timed request whose done is never called does not stop the endpoint's
// sampling for good: after a decay time a new request is timed, and the
// estimate follows the endpoint's latency again.
func TestPeakEWMAResumesTimingAfterAnAbandonedRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pe := NewPeakEWMA([]Endpoint{{Address: "a"}}, WithDecay(time.Second))
		_, _, err := pe.Pick(t.Context()) // timed, and never done
		require.NoError(t, err)
		time.Sleep(2 * time.Second)
		for range 10 {
			_, done, err := pe.Pick(t.Context())
			require.NoError(t, err)
			time.Sleep(5 * time.Millisecond)
			done(nil)
		}
		assert.InDelta(t, float64(5*time.Millisecond), float64(pe.States()[0].LatencyEWMA), float64(time.Millisecond))
	})
}

// Under load, at most one request per endpoint is timed at a time, at most
// one per sampleSpacing, and the others get the endpoint's untimed done.
func TestPeakEWMATimesOneRequestPerEndpointAtATime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pe := NewPeakEWMA([]Endpoint{{Address: "a"}})
		ep := pe.set.snap.Load().all[0]
		var dones []func(error)
		for range 10 {
			_, done, err := pe.Pick(t.Context())
			require.NoError(t, err)
			dones = append(dones, done)
		}
		timed := 0
		for _, done := range dones {
			if isSampleDone(done, ep) {
				timed++
			}
		}
		assert.Equal(t, 1, timed, "one timed request in flight")
		for _, done := range dones {
			done(nil)
		}
		_, done, err := pe.Pick(t.Context())
		require.NoError(t, err)
		assert.False(t, isSampleDone(done, ep), "none within sampleSpacing of the last")
		done(nil)
		time.Sleep(sampleSpacing)
		for i := 0; ; i++ { // the first picks may read the time before the sleep
			require.Less(t, i, 500, "a request is timed once sampleSpacing has passed")
			_, done, err = pe.Pick(t.Context())
			require.NoError(t, err)
			done(nil)
			if isSampleDone(done, ep) {
				break
			}
		}
	})
}

// samePointer reports whether f and g are the same function (for bound
// methods: of the same method).
func samePointer(f, g func(error)) bool {
	return reflect.ValueOf(f).Pointer() == reflect.ValueOf(g).Pointer()
}

// isSampleDone reports whether done is one of ep's timed done functions.
func isSampleDone(done func(error), ep *endpoint) bool {
	return samePointer(done, ep.sampleDone[0]) || samePointer(done, ep.sampleDone[1])
}
