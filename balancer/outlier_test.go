package balancer_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/balancer"
)

// simBackend is a simulated backend for outlier detection: each of its
// requests fails with probability failRate, drawn from its own seeded
// generator, so what happens to a backend depends only on how many requests
// it gets, whatever the order of picks. Past report outcomes in one round of
// traffic, its picks are reported as not used.
type simBackend struct {
	failRate float64
	report   int // 0: no limit
	rng      *rand.Rand
	served   int // outcomes reported in the current round
}

// simFleet is the simulated backends by address.
type simFleet map[string]*simBackend

// newSimFleet simulates a backend for every endpoint of eps: those named in
// failRates fail at that rate, the others never fail.
func newSimFleet(seed uint64, eps []balancer.Endpoint, failRates map[string]float64) simFleet {
	f := simFleet{}
	for i, ep := range eps {
		f[ep.Address] = &simBackend{failRate: failRates[ep.Address], rng: rand.New(rand.NewPCG(seed, uint64(i)))}
	}
	return f
}

// serve makes n picks of b, one round of traffic, and ends each request with
// the outcome of its backend.
func (f simFleet) serve(t testing.TB, b balancer.Balancer, n int) {
	t.Helper()
	for _, be := range f {
		be.served = 0
	}
	for range n {
		addr, done, err := b.Pick(context.Background())
		require.NoError(t, err)
		be := f[addr]
		require.NotNil(t, be, "picked an unknown address %s", addr)
		switch {
		case be.report > 0 && be.served >= be.report:
			done(balancer.ErrPickNotUsed)
		case be.rng.Float64() < be.failRate:
			be.served++
			done(errRequest)
		default:
			be.served++
			done(nil)
		}
	}
}

// runIntervals runs n outlier-detection intervals of a balancer built at the
// start of the bubble: in the middle of each, f serves perInterval requests
// through b; after each judgement, at i × interval, check(i) is called. Each
// interval sees exactly one round of traffic.
func runIntervals(t *testing.T, b balancer.Balancer, f simFleet, interval time.Duration, n, perInterval int, check func(i int)) {
	t.Helper()
	time.Sleep(interval / 2)
	for i := 1; i <= n; i++ {
		f.serve(t, b, perInterval)
		time.Sleep(interval) // past the i-th judgement
		synctest.Wait()
		check(i)
	}
}

// ejectedAddrs returns the addresses of the ejected endpoints.
func ejectedAddrs(states []balancer.State) []string {
	var out []string
	for _, s := range states {
		if s.Ejected {
			out = append(out, s.Address)
		}
	}
	return out
}

// noConsecutive turns consecutive-failure ejection off, so that only outlier
// detection ejects, for the default 30 s × multiplier, at most 300 s.
var noConsecutive = balancer.WithEjection(0, 30*time.Second, 300*time.Second)

func TestSuccessRateEjectsABackendFailingHalfItsRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 10 * time.Second
		eps := endpoints(5)
		bad := eps[2].Address
		b := balancer.NewRoundRobin(eps, noConsecutive, balancer.WithOutlierDetection(balancer.OutlierDetection{
			Interval:    interval,
			SuccessRate: &balancer.SuccessRateEjection{},
		}))
		f := newSimFleet(1, eps, map[string]float64{bad: 0.5})
		ejectedAt := 0
		runIntervals(t, b, f, interval, 2, 5*200, func(i int) {
			ejected := ejectedAddrs(b.States())
			if ejectedAt == 0 && len(ejected) > 0 {
				ejectedAt = i
			}
			if ejectedAt != 0 {
				assert.Equal(t, []string{bad}, ejected, "interval %d: only the failing backend is ejected", i)
			}
		})
		require.NotZero(t, ejectedAt, "the backend failing half its requests is ejected within two intervals")
		assert.Zero(t, picks(t, b, 400)[bad], "an ejected backend is not picked")
	})
}

// ejectionsOfBackendsFailingAlike runs 100 intervals of five backends that
// each fail 1% of 200 requests per interval, and returns in how many
// intervals some backend was newly ejected.
func ejectionsOfBackendsFailingAlike(t *testing.T, minimumGap float64) int {
	t.Helper()
	const interval = 10 * time.Second
	eps := endpoints(5)
	rates := map[string]float64{}
	for _, ep := range eps {
		rates[ep.Address] = 0.01
	}
	b := balancer.NewRoundRobin(eps, noConsecutive, balancer.WithOutlierDetection(balancer.OutlierDetection{
		Interval:    interval,
		SuccessRate: &balancer.SuccessRateEjection{MinimumGap: minimumGap},
	}))
	f := newSimFleet(7, eps, rates)
	ejections := 0
	wasEjected := map[string]bool{}
	runIntervals(t, b, f, interval, 100, 5*200, func(int) {
		// An ejection lasts 27 s at least, longer than an interval, so
		// none is missed.
		newOne := false
		for _, s := range b.States() {
			if s.Ejected && !wasEjected[s.Address] {
				newOne = true
			}
			wasEjected[s.Address] = s.Ejected
		}
		if newOne {
			ejections++
		}
	})
	return ejections
}

func TestSuccessRateDoesNotEjectWhenEveryBackendFailsAlike(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		assert.Zero(t, ejectionsOfBackendsFailingAlike(t, 0), "with the default MinimumGap of 5 points, noise ejects nothing")
	})
}

// The same traffic, with the rule as gRPC and Envoy write it (no minimum
// gap), ejects healthy backends: the guard is what keeps them in.
func TestSuccessRateWithoutMinimumGapEjectsBackendsThatFailAlike(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := ejectionsOfBackendsFailingAlike(t, -1)
		t.Logf("without a minimum gap, %d of 100 intervals ejected a backend failing 1%% like the others", n)
		// Until the first ejection, every outcome follows from the seed.
		assert.Positive(t, n, "mean − 1.9 × stdev alone ejects backends that fail alike")
	})
}

func TestFailurePercentageEjectsABackendAboveTheThreshold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 10 * time.Second
		eps := endpoints(6)
		bad, half := eps[1].Address, eps[4].Address
		b := balancer.NewRoundRobin(eps, noConsecutive, balancer.WithOutlierDetection(balancer.OutlierDetection{
			Interval:          interval,
			FailurePercentage: &balancer.FailurePercentageEjection{},
		}))
		f := newSimFleet(3, eps, map[string]float64{bad: 0.9, half: 0.5})
		runIntervals(t, b, f, interval, 6, 6*1000, func(i int) {
			// Requests are served at 5 s, 15 s, … and judged at 10 s, 20 s,
			// …: the 90% backend is ejected at 10 s for 27 to 33 s, so it
			// gets no request in the fourth interval, and is ejected again
			// at 50 s.
			ejected := ejectedAddrs(b.States())
			if i == 4 {
				assert.Empty(t, ejected, "interval %d: the 90%% backend got no request while ejected", i)
			} else {
				assert.Equal(t, []string{bad}, ejected, "interval %d: the backend failing 90%% (threshold 85) is ejected, and the one failing 50%% is not", i)
			}
		})
	})
}

func TestOutlierDetectionNeedsMinimumHostsWithRequestVolume(t *testing.T) {
	// Six backends; the first fails every request, the others none. Each
	// gets 200 requests per interval, of which only report (if set) count.
	for _, tt := range []struct {
		name   string
		od     balancer.OutlierDetection
		report map[int]int // endpoint index -> outcomes reported per interval
		eject  bool
	}{
		{
			name:   "SuccessRate/TwoHostsBelowRequestVolumeLeaveFourOfFive",
			od:     balancer.OutlierDetection{SuccessRate: &balancer.SuccessRateEjection{StdevFactor: 1}},
			report: map[int]int{4: 99, 5: 99},
		},
		{
			name:   "SuccessRate/SixHostsAtRequestVolume",
			od:     balancer.OutlierDetection{SuccessRate: &balancer.SuccessRateEjection{StdevFactor: 1}},
			report: map[int]int{4: 100, 5: 100},
			eject:  true,
		},
		{
			name:   "SuccessRate/FailingHostBelowRequestVolume",
			od:     balancer.OutlierDetection{SuccessRate: &balancer.SuccessRateEjection{StdevFactor: 1, MinimumHosts: 4}},
			report: map[int]int{0: 99},
		},
		{
			name:   "SuccessRate/FailingHostAtRequestVolume",
			od:     balancer.OutlierDetection{SuccessRate: &balancer.SuccessRateEjection{StdevFactor: 1, MinimumHosts: 4}},
			report: map[int]int{0: 100},
			eject:  true,
		},
		{
			name:   "FailurePercentage/TwoHostsBelowRequestVolumeLeaveFourOfFive",
			od:     balancer.OutlierDetection{FailurePercentage: &balancer.FailurePercentageEjection{}},
			report: map[int]int{4: 49, 5: 49},
		},
		{
			name:   "FailurePercentage/SixHostsAtRequestVolume",
			od:     balancer.OutlierDetection{FailurePercentage: &balancer.FailurePercentageEjection{}},
			report: map[int]int{4: 50, 5: 50},
			eject:  true,
		},
		{
			name:   "FailurePercentage/FailingHostBelowRequestVolume",
			od:     balancer.OutlierDetection{FailurePercentage: &balancer.FailurePercentageEjection{MinimumHosts: 4}},
			report: map[int]int{0: 49},
		},
		{
			name:   "FailurePercentage/FailingHostAtRequestVolume",
			od:     balancer.OutlierDetection{FailurePercentage: &balancer.FailurePercentageEjection{MinimumHosts: 4}},
			report: map[int]int{0: 50},
			eject:  true,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const interval = 10 * time.Second
				eps := endpoints(6)
				bad := eps[0].Address
				tt.od.Interval = interval
				b := balancer.NewRoundRobin(eps, noConsecutive, balancer.WithOutlierDetection(tt.od))
				f := newSimFleet(5, eps, map[string]float64{bad: 1})
				for i, n := range tt.report {
					f[eps[i].Address].report = n
				}
				runIntervals(t, b, f, interval, 2, 6*200, func(i int) {
					ejected := ejectedAddrs(b.States())
					if tt.eject {
						assert.Equal(t, []string{bad}, ejected, "interval %d", i)
					} else {
						assert.Empty(t, ejected, "interval %d", i)
					}
				})
			})
		})
	}
}

// ejectionsMultiplier checks the ejection time's multiplier: up by one per
// ejection, down by one per interval spent in rotation, whatever successes
// came meanwhile.
func ejectionsMultiplier(t *testing.T, interval time.Duration, opts ...balancer.Option) {
	const base = 10 * time.Second
	eps := endpoints(4)
	bad := eps[1].Address
	b := balancer.NewRoundRobin(eps, append(opts, balancer.WithEjection(3, base, 300*time.Second))...)

	// eject fails bad until it is ejected, checks that the ejection lasts
	// multiplier × base, ±10%, and returns when it ends.
	eject := func(multiplier int, why string) time.Time {
		t.Helper()
		fail(t, b, bad, 3)
		s := state(b.States(), bad)
		require.True(t, s.Ejected, why)
		want := time.Duration(multiplier) * base
		got := time.Until(s.EjectedUntil)
		assert.GreaterOrEqual(t, got, want-want/10, "%s: ejected for %v, want %v ±10%%", why, got, want)
		assert.LessOrEqual(t, got, want+want/10, "%s: ejected for %v, want %v ±10%%", why, got, want)
		return s.EjectedUntil
	}
	// readmitted waits until the ejection ends, and checks bad is back.
	readmitted := func(until time.Time) {
		t.Helper()
		time.Sleep(time.Until(until))
		synctest.Wait()
		require.False(t, state(b.States(), bad).Ejected, "re-admitted at the end of its ejection")
	}
	// inRotation spends d in rotation, with requests to bad succeeding.
	inRotation := func(d time.Duration) {
		t.Helper()
		for range 4 {
			time.Sleep(d / 4)
			assert.Positive(t, picks(t, b, 40)[bad], "bad is in rotation")
		}
		assert.Zero(t, state(b.States(), bad).ConsecutiveFailures, "successes reset the failure count")
	}

	readmitted(eject(1, "first ejection"))
	readmitted(eject(2, "ejected again at once: twice as long"))
	readmitted(eject(3, "a third time at once: three times as long"))
	inRotation(2*interval + interval/2)
	readmitted(eject(2, "after two intervals in rotation, 3 − 2 + 1: successes do not reset it"))
	inRotation(2*interval - interval/10)
	readmitted(eject(2, "after not quite two intervals, 2 − 1 + 1: it goes down once per whole interval"))
	inRotation(10 * interval)
	eject(1, "after ten intervals, max(2 − 10, 0) + 1: it does not go below zero")
}

func TestEjectionMultiplierGoesDownOncePerIntervalInRotation(t *testing.T) {
	t.Run("DefaultInterval", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) { ejectionsMultiplier(t, 10*time.Second) })
	})
	t.Run("IntervalOfOutlierDetection", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			const interval = 4 * time.Second
			ejectionsMultiplier(t, interval, balancer.WithOutlierDetection(balancer.OutlierDetection{
				Interval:          interval,
				FailurePercentage: &balancer.FailurePercentageEjection{}, // too few requests to judge
			}))
		})
	})
}

func TestMaxEjectedShareBoundsOutlierEjections(t *testing.T) {
	const interval = 10 * time.Second
	t.Run("FailurePercentageWithAConsecutiveFailureEjection", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			eps := endpoints(10)
			b := balancer.NewRoundRobin(eps,
				balancer.WithEjection(200, 30*time.Second, 300*time.Second),
				balancer.WithMaxEjectedShare(0.4), // 4 of 10
				balancer.WithOutlierDetection(balancer.OutlierDetection{
					Interval:          interval,
					FailurePercentage: &balancer.FailurePercentageEjection{},
				}))
			// One ejected by consecutive failures counts against the share.
			fail(t, b, eps[9].Address, 200)
			require.Equal(t, []string{eps[9].Address}, ejectedAddrs(b.States()))
			// The successes of the other endpoints meanwhile would water
			// down the outliers' failures: let the first judgement take
			// them.
			time.Sleep(interval)

			// Four outliers, of which three fit under the cap.
			rates := map[string]float64{}
			for _, ep := range eps[:4] {
				rates[ep.Address] = 0.9
			}
			f := newSimFleet(11, eps, rates)
			runIntervals(t, b, f, interval, 6, 10*1000, func(i int) {
				ejected := ejectedAddrs(b.States())
				if i == 1 { // at 25 s; the first ejection lasts 27 s at least
					assert.Len(t, ejected, 4, "interval 1: the consecutive-failure ejection and three of four outliers")
					assert.Contains(t, ejected, eps[9].Address)
				}
				assert.LessOrEqual(t, len(ejected), 4, "interval %d: %v", i, ejected)
				for _, addr := range ejected {
					if addr != eps[9].Address {
						assert.Contains(t, rates, addr, "interval %d: only outliers are ejected", i)
					}
				}
			})
		})
	})
	t.Run("SuccessRate", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			eps := endpoints(10)
			b := balancer.NewRoundRobin(eps, noConsecutive,
				balancer.WithMaxEjectedShare(0.2), // 2 of 10
				balancer.WithOutlierDetection(balancer.OutlierDetection{
					Interval:    interval,
					SuccessRate: &balancer.SuccessRateEjection{StdevFactor: 1},
				}))
			// Three outliers (mean 0.7, stdev 0.46: all three are below
			// the limit of 0.24), of which two fit under the cap.
			rates := map[string]float64{}
			for _, ep := range eps[:3] {
				rates[ep.Address] = 1
			}
			f := newSimFleet(13, eps, rates)
			runIntervals(t, b, f, interval, 6, 10*200, func(i int) {
				ejected := ejectedAddrs(b.States())
				if i == 1 {
					assert.Len(t, ejected, 2, "interval 1: two of three outliers")
				}
				assert.LessOrEqual(t, len(ejected), 2, "interval %d: %v", i, ejected)
				for _, addr := range ejected {
					assert.Contains(t, rates, addr, "interval %d: only outliers are ejected", i)
				}
			})
		})
	})
}
