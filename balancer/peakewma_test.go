package balancer_test

import (
	"context"
	"slices"
	"sync"
	"testing"
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
// named slow answers in 50 ms, the others in 1 ms. Latency is simulated by
// sleeping: it is the workload, not synchronisation.
func simulate(t *testing.T, b balancer.Balancer, slow string) loadResult {
	t.Helper()
	const workers, requests = 8, 60
	var (
		mu        sync.Mutex
		latencies []time.Duration
		slowPicks int
		wg        sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range requests {
				start := time.Now()
				addr, done, err := b.Pick(context.Background())
				if !assert.NoError(t, err) {
					return
				}
				if addr == slow {
					time.Sleep(50 * time.Millisecond)
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
		}()
	}
	wg.Wait()
	slices.Sort(latencies)
	return loadResult{slowPicks: slowPicks, p99: latencies[len(latencies)*99/100]}
}

func TestPeakEWMAAvoidsTheSlowBackend(t *testing.T) {
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
