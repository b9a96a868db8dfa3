package balancer

import (
	"context"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// WithDecay sets how fast NewPeakEWMA forgets latency: a sample's weight
// falls by e every d (default 10 s). Other policies ignore it. Values of 0
// or below keep the default.
func WithDecay(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.decay = d
		}
	}
}

// WithDefaultLatency sets the latency NewPeakEWMA assumes for an endpoint it
// has not measured yet (default 10 ms). Other policies ignore it. Values
// below 0 keep the default.
func WithDefaultLatency(d time.Duration) Option {
	return func(c *config) {
		if d >= 0 {
			c.defaultLatency = d
		}
	}
}

// latency is the peak-EWMA latency estimate of one endpoint. A sample above
// the estimate replaces it at once (the peak); a lower one pulls it down
// with a weight that grows with the time since the last sample.
type latency struct {
	bits  atomic.Uint64 // float64 nanoseconds; 0 until the first sample
	stamp atomic.Int64  // unix nanoseconds of the last sample
}

func (l *latency) estimate(def time.Duration) float64 {
	if v := math.Float64frombits(l.bits.Load()); v > 0 {
		return v
	}
	return float64(def)
}

func (l *latency) observe(rtt time.Duration, now int64, decay time.Duration) {
	sample := max(float64(rtt), 1)
	for {
		oldBits := l.bits.Load()
		old := math.Float64frombits(oldBits)
		next := sample
		if old > 0 && sample < old {
			elapsed := float64(max(now-l.stamp.Load(), 0))
			w := math.Exp(-elapsed / float64(decay))
			next = old*w + sample*(1-w)
		}
		if l.bits.CompareAndSwap(oldBits, math.Float64bits(next)) {
			l.stamp.Store(now)
			return
		}
	}
}

// PeakEWMA picks, of two distinct random endpoints, the one with the lower
// cost: its peak-EWMA latency times its requests in flight plus one, as
// Finagle and Linkerd do. It steers load away from slow backends within a
// few requests. Its done function measures the request from Pick, so each
// pick allocates a small closure.
type PeakEWMA struct {
	set *endpointSet
}

// NewPeakEWMA returns a latency-aware power-of-two-choices balancer. See
// WithDecay and WithDefaultLatency.
func NewPeakEWMA(endpoints []Endpoint, opts ...Option) *PeakEWMA {
	p := &PeakEWMA{set: newEndpointSet(opts)}
	p.Update(endpoints)
	return p
}

// Pick returns the cheaper of two distinct random endpoints that are not
// ejected.
func (p *PeakEWMA) Pick(context.Context) (string, func(error), error) {
	eps := p.set.snap.Load().eps
	var ep *endpoint
	switch n := len(eps); n {
	case 0:
		return "", noDone, ErrNoEndpoints
	case 1:
		ep = eps[0]
	default:
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		ep = p.cheaper(usable(eps, i), usable(eps, j))
	}
	addr, done, _ := ep.pick()
	start := time.Now()
	cfg := &p.set.cfg
	return addr, func(err error) {
		now := time.Now()
		if err == nil {
			ep.latency.observe(now.Sub(start), now.UnixNano(), cfg.decay)
		}
		done(err)
	}, nil
}

func (p *PeakEWMA) cheaper(a, b *endpoint) *endpoint {
	if a.ejected.Load() != b.ejected.Load() {
		if a.ejected.Load() {
			return b
		}
		return a
	}
	def := p.set.cfg.defaultLatency
	costA := a.latency.estimate(def) * float64(a.inflight.Load()+1)
	costB := b.latency.estimate(def) * float64(b.inflight.Load()+1)
	if costB < costA {
		return b
	}
	return a
}

// Update replaces the endpoints; latency estimates of kept addresses stay.
func (p *PeakEWMA) Update(endpoints []Endpoint) { p.set.update(endpoints) }

// States reports each endpoint's state, with its latency estimate.
func (p *PeakEWMA) States() []State { return p.set.states() }
