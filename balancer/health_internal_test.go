package balancer

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression: an ejection's timer held the balancer's endpoints for as long
// as the ejection lasted (up to 300 s by default), and outlier detection's
// timer would hold them for ever.
func TestDroppedBalancerCanBeCollected(t *testing.T) {
	collected := make(chan string, 4)
	func() {
		eps := []Endpoint{{Address: "a"}, {Address: "b"}, {Address: "c"}, {Address: "d"}}
		rr := NewRoundRobin(eps, WithEjection(1, time.Hour, time.Hour))
		for ejected := false; !ejected; {
			_, done, err := rr.Pick(context.Background())
			require.NoError(t, err)
			done(context.DeadlineExceeded)
			ejected = rr.set.ejectedCount() > 0
		}
		runtime.AddCleanup(rr.set, func(name string) { collected <- name }, "ejection")

		od := NewLeastRequest(eps, WithOutlierDetection(OutlierDetection{
			Interval:    time.Hour,
			SuccessRate: &SuccessRateEjection{},
		}))
		_, done, err := od.Pick(context.Background())
		require.NoError(t, err)
		done(nil)
		runtime.AddCleanup(od.set, func(name string) { collected <- name }, "outlier detection")
	}()
	got := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < 2 && time.Now().Before(deadline) {
		runtime.GC()
		select {
		case name := <-collected:
			got[name] = true
		case <-time.After(10 * time.Millisecond):
		}
	}
	assert.Equal(t, map[string]bool{"ejection": true, "outlier detection": true}, got, "both balancers' state collected")
}
