package balancer

import (
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"
	"weak"
)

// OutlierDetection ejects endpoints whose requests fail more often than
// their peers', judged once per interval, as Envoy's outlier detection and
// gRPC's outlier_detection policy (gRFC A50) do. Consecutive failures (see
// WithEjection) miss a backend that fails every other request; these
// catch it. Ejection times and the ejected-share cap are those of
// WithEjection and WithMaxEjectedShare.
type OutlierDetection struct {
	// Interval is how often outcomes are judged, and how often an
	// endpoint's ejection multiplier goes down by one while it is in
	// rotation. Default (0 or below): 10 s; below 1 ms means 1 ms.
	Interval time.Duration
	// SuccessRate, if set, ejects endpoints whose success rate is far
	// below the mean of their peers'.
	SuccessRate *SuccessRateEjection
	// FailurePercentage, if set, ejects endpoints whose share of failed
	// requests is above a fixed threshold.
	FailurePercentage *FailurePercentageEjection
}

// SuccessRateEjection is success-rate outlier detection. Each interval,
// among endpoints with at least RequestVolume requests, if there are at
// least MinimumHosts of them, an endpoint is ejected when its success rate
// is below mean − StdevFactor × stdev of their rates, and also at least
// MinimumGap percentage points below the mean. Zero fields take the
// defaults, which are gRPC's, except MinimumGap, which gRPC and Envoy lack.
type SuccessRateEjection struct {
	// StdevFactor: default 1.9 (gRPC's stdev_factor of 1900 thousandths).
	StdevFactor float64
	// EnforcementPercentage is the chance, in percent, that an endpoint
	// found to be an outlier is ejected. Default 100.
	EnforcementPercentage int
	// MinimumHosts: default 5.
	MinimumHosts int
	// RequestVolume: default 100 requests in the interval.
	RequestVolume int
	// MinimumGap, in percentage points, guards against noise: when every
	// endpoint fails about as often (1% each, say), one of them falls
	// below mean − 1.9 × stdev by chance now and then (in about 6% of
	// intervals with five endpoints of 200 requests each), and the rule
	// alone ejects a healthy backend. Requiring the rate to be also this
	// far below the mean ejects only real outliers. Default 5; negative
	// means 0 (the rule as gRPC and Envoy write it).
	MinimumGap float64
}

// FailurePercentageEjection is failure-percentage outlier detection. Each
// interval, among endpoints with at least RequestVolume requests, if there
// are at least MinimumHosts of them, an endpoint is ejected when more than
// Threshold percent of its requests failed. Zero fields take gRPC's
// defaults.
type FailurePercentageEjection struct {
	// Threshold: default 85 (percent).
	Threshold int
	// EnforcementPercentage: default 100.
	EnforcementPercentage int
	// MinimumHosts: default 5.
	MinimumHosts int
	// RequestVolume: default 50 requests in the interval.
	RequestVolume int
}

// WithOutlierDetection turns on success-rate and failure-percentage
// ejection (each only if its field is set). Off by default.
func WithOutlierDetection(od OutlierDetection) Option {
	return func(c *config) {
		o := outlierConfig{interval: od.Interval}
		if o.interval <= 0 {
			o.interval = 10 * time.Second
		}
		o.interval = max(o.interval, time.Millisecond)
		if sr := od.SuccessRate; sr != nil {
			v := *sr
			v.StdevFactor = orDefault(v.StdevFactor, 1.9)
			v.EnforcementPercentage = percent(v.EnforcementPercentage, 100)
			v.MinimumHosts = int(orDefault(float64(v.MinimumHosts), 5))
			v.RequestVolume = int(orDefault(float64(v.RequestVolume), 100))
			switch {
			case v.MinimumGap == 0:
				v.MinimumGap = 5
			case v.MinimumGap < 0:
				v.MinimumGap = 0
			}
			o.successRate = &v
		}
		if fp := od.FailurePercentage; fp != nil {
			v := *fp
			v.Threshold = percent(v.Threshold, 85)
			v.EnforcementPercentage = percent(v.EnforcementPercentage, 100)
			v.MinimumHosts = int(orDefault(float64(v.MinimumHosts), 5))
			v.RequestVolume = int(orDefault(float64(v.RequestVolume), 50))
			o.failurePercentage = &v
		}
		c.outlier = o
	}
}

// orDefault returns v, or def if v is 0 or below.
func orDefault(v, def float64) float64 {
	if v > 0 {
		return v
	}
	return def
}

// percent returns v clamped to 100, or def if v is 0 or below.
func percent(v, def int) int {
	if v > 0 {
		return min(v, 100)
	}
	return def
}

// outlierConfig is the validated OutlierDetection.
type outlierConfig struct {
	interval          time.Duration
	successRate       *SuccessRateEjection
	failurePercentage *FailurePercentageEjection
}

func (o *outlierConfig) enabled() bool {
	return o.successRate != nil || o.failurePercentage != nil
}

// callCounts counts one endpoint's outcomes in the current interval.
type callCounts struct {
	ok, failed atomic.Int64
}

func (c *callCounts) record(ok bool) {
	if ok {
		c.ok.Add(1)
	} else {
		c.failed.Add(1)
	}
}

// startOutlierDetection judges outcomes every interval, for as long as the
// set is in use: the timer holds it weakly, so a dropped balancer can be
// collected, and its timer then stops. Each tick arms the next with a new
// timer, so no timer variable is shared with the goroutine that runs it.
func (s *endpointSet) startOutlierDetection() {
	if !s.cfg.outlier.enabled() {
		return
	}
	wp := weak.Make(s)
	interval := s.cfg.outlier.interval
	var tick func()
	tick = func() {
		if s := wp.Value(); s != nil {
			s.detectOutliers(mono())
			time.AfterFunc(interval, tick)
		}
	}
	time.AfterFunc(interval, tick)
}

// hostCalls is one endpoint's outcomes over an interval.
type hostCalls struct {
	ep         *endpoint
	ok, failed int64
}

func (h hostCalls) volume() int64 { return h.ok + h.failed }

// detectOutliers ends an interval at now: it takes every endpoint's counts
// and ejects the outliers they show.
func (s *endpointSet) detectOutliers(now int64) {
	s.mu.Lock()
	defer s.unlockAndReport()
	all := s.snap.Load().all
	hosts := make([]hostCalls, 0, len(all))
	for _, ep := range all {
		hosts = append(hosts, hostCalls{ep: ep, ok: ep.calls.ok.Swap(0), failed: ep.calls.failed.Swap(0)})
	}
	ejected := false
	if sr := s.cfg.outlier.successRate; sr != nil {
		ejected = s.ejectBySuccessRateLocked(sr, hosts, now) || ejected
	}
	if fp := s.cfg.outlier.failurePercentage; fp != nil {
		ejected = s.ejectByFailurePercentageLocked(fp, hosts, now) || ejected
	}
	if ejected {
		s.publishLocked(all, now)
	}
}

// candidates returns the hosts with at least volume requests.
func candidates(hosts []hostCalls, volume int) []hostCalls {
	var out []hostCalls
	for _, h := range hosts {
		if h.volume() >= int64(volume) {
			out = append(out, h)
		}
	}
	return out
}

func (s *endpointSet) ejectBySuccessRateLocked(sr *SuccessRateEjection, hosts []hostCalls, now int64) bool {
	hosts = candidates(hosts, sr.RequestVolume)
	if len(hosts) < sr.MinimumHosts || len(hosts) == 0 {
		return false
	}
	var sum, sumSq float64
	for _, h := range hosts {
		r := float64(h.ok) / float64(h.volume())
		sum += r
		sumSq += r * r
	}
	n := float64(len(hosts))
	mean := sum / n
	stdev := math.Sqrt(max(sumSq/n-mean*mean, 0))
	limit := min(mean-sr.StdevFactor*stdev, mean-sr.MinimumGap/100)
	ejected := false
	for _, h := range hosts {
		r := float64(h.ok) / float64(h.volume())
		if r < limit && rand.IntN(100) < sr.EnforcementPercentage {
			ejected = s.ejectLocked(h.ep, now, EjectedBySuccessRate) || ejected
		}
	}
	return ejected
}

func (s *endpointSet) ejectByFailurePercentageLocked(fp *FailurePercentageEjection, hosts []hostCalls, now int64) bool {
	hosts = candidates(hosts, fp.RequestVolume)
	if len(hosts) < fp.MinimumHosts || len(hosts) == 0 {
		return false
	}
	ejected := false
	for _, h := range hosts {
		if 100*h.failed > int64(fp.Threshold)*h.volume() && rand.IntN(100) < fp.EnforcementPercentage {
			ejected = s.ejectLocked(h.ep, now, EjectedByFailurePercentage) || ejected
		}
	}
	return ejected
}
