package balancer

import (
	"context"
	"math"
	"sync/atomic"
	"time"
)

// WithDecay sets how fast NewPeakEWMA forgets latency: an estimate falls
// by e every d while no higher sample arrives, and an endpoint without a
// sample for d is treated as unmeasured (default 10 s). Other policies
// ignore it. Values of 0 or below keep the default.
func WithDecay(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.decay = newDecay(d)
		}
	}
}

// WithDefaultLatency sets the latency NewPeakEWMA charges an unmeasured
// endpoint while requests to it are in flight (default 1 s): high, so that
// concurrent clients wait for a new endpoint's first answer rather than all
// rushing to it. Set it above your slowest normal request. Other policies
// ignore it. Values of 0 or below keep the default.
func WithDefaultLatency(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.defaultLatency = d
		}
	}
}

// latency is the peak-EWMA latency estimate of one endpoint: the estimate
// as of the last sample, which decays towards zero by e every decay time
// as it is read, and is raised at once by a higher sample. This is the
// arithmetic of Finagle's and Linkerd's peak EWMA, whose reads decay the
// estimate in place; here reads compute the decay without writing, so
// picks do not contend on a cache line.
type latency struct {
	bits  atomic.Uint64 // float64 nanoseconds; 0 until the first sample
	stamp atomic.Int64  // mono time of the last sample
	// sample is the endpoint's timed request: its start time (mono, to
	// within 8 ns) with the sample bits below in the low three bits, or 0
	// before the first. At most one request per endpoint is timed at a
	// time, so its start needs no per-request memory.
	sample atomic.Int64
}

// The low bits of latency.sample.
const (
	sampleParity    = 1 << iota // which of the endpoint's two sample dones the sample's request got
	sampleAbandoned             // a request taken over by the sample, with the other parity, has not called done
	sampleInFlight              // the sample's request has not called done
	sampleBits      = sampleParity | sampleAbandoned | sampleInFlight
)

// sampleSpacing is the least time between the starts of two timed requests
// to one endpoint. Timing every request would read the clock twice per
// request, which costs more than the rest of a pick; one sample per
// millisecond follows any change of latency that matters to a balancer.
const sampleSpacing = time.Millisecond

// startSample starts timing a request picked at now (a coarse reading,
// fresh if it was just read from the clock) if the endpoint has no timed
// request in flight and its last one started at least sampleSpacing ago.
// It returns the parity of the sample, which selects the done function
// that ends it. A timed request out for longer than abandonAfter is taken
// to be abandoned (its done never called, or not yet), and a new one takes
// its place with the other parity, so that the old one's done, if it comes,
// is known for what it is and ignored. While such a done is outstanding,
// no second takeover is made, since a third request would need a third
// parity.
func (l *latency) startSample(now int64, fresh bool, abandonAfter int64) (parity int64, ok bool) {
	v := l.sample.Load()
	start := v &^ sampleBits
	next := v & (sampleParity | sampleAbandoned)
	switch {
	case v&sampleInFlight != 0:
		if now-start < abandonAfter || v&sampleAbandoned != 0 {
			return 0, false
		}
		next = (v ^ sampleParity) | sampleAbandoned // take over
	case v != 0 && now-start < int64(sampleSpacing):
		return 0, false
	}
	if !fresh {
		now = mono()
	}
	next = next&(sampleParity|sampleAbandoned) | now&^sampleBits | sampleInFlight
	return next & sampleParity, l.sample.CompareAndSwap(v, next)
}

// endSample ends the sample of the given parity and returns its start
// time; or, for the done of a request that a takeover replaced, notes that
// it came and returns false.
func (l *latency) endSample(parity int64) (start int64, ok bool) {
	for {
		v := l.sample.Load()
		switch {
		case v&sampleInFlight != 0 && v&sampleParity == parity:
			if l.sample.CompareAndSwap(v, v&^sampleInFlight) {
				return v &^ sampleBits, true
			}
		case v&sampleAbandoned != 0 && v&sampleParity != parity:
			if l.sample.CompareAndSwap(v, v&^sampleAbandoned) {
				return 0, false
			}
		default:
			return 0, false // a done called twice
		}
	}
}

// decayed returns the estimate at now, or 0 if there is none: no sample
// yet, or none for a whole decay time.
func (l *latency) decayed(now int64, d *decay) float64 {
	v := math.Float64frombits(l.bits.Load())
	age := now - l.stamp.Load()
	if v == 0 || age >= d.nanos {
		return 0
	}
	return v * expNeg(float64(max(age, 0))*d.inverse)
}

// decay is WithDecay's time, with its inverse: a multiplication costs a
// fraction of a division, and picks decay two estimates.
type decay struct {
	nanos   int64
	inverse float64 // 1 / nanos
}

func newDecay(d time.Duration) decay { return decay{nanos: int64(d), inverse: 1 / float64(d)} }

// observe records a request that took rtt, ending at now.
func (l *latency) observe(rtt time.Duration, now int64, d *decay) {
	sample := max(float64(rtt), 1)
	for {
		oldBits := l.bits.Load()
		next := max(sample, l.decayed(now, d))
		// The estimate and its stamp are two stores, not one: a read or
		// a sample between them can misjudge the estimate's age for a
		// moment, which an estimate of load tolerates.
		if l.bits.CompareAndSwap(oldBits, math.Float64bits(next)) {
			l.stamp.Store(now)
			return
		}
	}
}

// expNeg returns e^-x for x ≥ 0. Most reads are microseconds after the last
// sample, against a decay of seconds, where 1 - x + x²/2 is exact to 1e-9
// and costs a fraction of math.Exp.
func expNeg(x float64) float64 {
	if x < 1e-3 {
		return 1 - x + x*x/2
	}
	return math.Exp(-x)
}

// PeakEWMA picks, of two distinct random endpoints that are not ejected,
// the one with the lower cost, as Finagle and Linkerd do: its peak-EWMA
// latency times its requests in flight plus one. It steers load away from
// slow backends within a few requests. An endpoint it has not measured, or
// has not heard from for a whole decay time (see WithDecay), costs nothing
// while it has no request in flight, so new and recovered endpoints are
// tried at once, and costs the default latency (see WithDefaultLatency)
// times its requests in flight plus one while it has, so concurrent clients
// do not all rush to it.
//
// It measures latency on a sample of the requests: it times a request from
// Pick to done when the endpoint has no timed request in flight and its
// last one started at least a millisecond ago, so a request-heavy client
// reads the clock for few of its requests. Picks that come microseconds
// apart decay estimates against a clock reading up to a few microseconds
// old. Picks allocate nothing.
type PeakEWMA struct {
	set   *endpointSet
	clock coarseClock
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
	snap := p.set.snap.Load()
	eps := snap.healthy
	if len(eps) == 0 {
		return "", noDone, ErrNoEndpoints
	}
	now, fresh := p.clock.now()
	var ep *endpoint
	if snap.rampUntil != 0 {
		ep = p.set.pickRamping(snap, func(eps []*endpoint, avoid *endpoint) *endpoint { return p.choose(eps, now, avoid) })
	} else {
		ep = p.choose(eps, now, nil)
	}
	addr, done, _ := ep.pick()
	if parity, ok := ep.latency.startSample(now, fresh, p.set.cfg.decay.nanos); ok {
		if !fresh {
			p.clock.record(ep.latency.sample.Load() &^ sampleBits)
		}
		done = ep.sampleDone[parity]
	}
	return addr, done, nil
}

// finishSample ends a timed request whose sample has the given parity: it
// records the latency of a success and reports the outcome to the
// endpoint.
func (ep *endpoint) finishSample(parity int64, err error) {
	if start, ok := ep.latency.endSample(parity); ok && err == nil {
		now := mono()
		ep.latency.observe(time.Duration(now-start), now, &ep.set.cfg.decay)
	}
	ep.finish(err)
}

// choose returns the cheaper of two distinct random endpoints of eps at
// now, or, if one of them is avoid, the other.
func (p *PeakEWMA) choose(eps []*endpoint, now int64, avoid *endpoint) *endpoint {
	if len(eps) == 1 {
		return eps[0]
	}
	i, j := twoDistinct(len(eps))
	switch avoid {
	case eps[i]:
		return eps[j]
	case eps[j]:
		return eps[i]
	}
	return p.cheaper(eps[i], eps[j], now)
}

// cheaper returns the one of a and b with the lower cost at now; a on a tie.
func (p *PeakEWMA) cheaper(a, b *endpoint, now int64) *endpoint {
	if p.cost(b, now) < p.cost(a, now) {
		return b
	}
	return a
}

// cost is ep's latency estimate times its requests in flight plus one. An
// endpoint without an estimate costs 0 while idle and the default latency
// per request while busy.
func (p *PeakEWMA) cost(ep *endpoint, now int64) float64 {
	c := &p.set.cfg
	pending := float64(ep.inflight.Load())
	v := ep.latency.decayed(now, &c.decay)
	if v == 0 {
		if pending == 0 {
			return 0
		}
		v = float64(c.defaultLatency)
	}
	return v * (pending + 1)
}

// Update replaces the endpoints; latency estimates of kept addresses stay.
func (p *PeakEWMA) Update(endpoints []Endpoint) { p.set.update(endpoints) }

// States reports each endpoint's state, with its latency estimate as of its
// last sample.
func (p *PeakEWMA) States() []State { return p.set.states() }
