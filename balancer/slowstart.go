package balancer

import (
	"math"
	"math/rand/v2"
	"time"
)

// slowStartConfig is the ramp-up of endpoints added by Update or
// re-admitted after an ejection.
type slowStartConfig struct {
	window     time.Duration // 0: off
	minFactor  float64       // the weight factor at the start of the window
	aggression float64       // the factor is elapsed/window to the power 1/aggression
}

// maxRampTries bounds the picks one request makes while endpoints ramp up.
// With every endpoint at the lowest factor, 10%, all 32 are turned down
// 3% of the time.
const maxRampTries = 32

// WithSlowStart ramps up the traffic of an endpoint added by Update to a
// set that had endpoints (not the first endpoints a balancer gets) or
// re-admitted after an ejection, as Envoy's slow_start_config does: for window, its weight is
// multiplied by max(minPercent/100, (elapsed/window)^(1/aggression)), so a
// backend with cold caches or a JIT still warming is not flooded. An
// aggression of 1 ramps linearly; above 1 it ramps faster at first.
//
// Default: off. A window of 0 or below turns it off; a minPercent outside
// (0, 100] means 10; an aggression of 0 or below means 1. RoundRobin,
// WeightedRoundRobin, Random, LeastRequest and PeakEWMA support it, by
// keeping a pick of a ramping endpoint with probability equal to its
// factor and picking again otherwise (at most 32 picks; then the pick with
// the highest factor stands), which gives each endpoint its share by its
// reduced weight; Maglev
// ignores it, since a key must stay where it maps. Picks read the clock
// only while some endpoint is ramping up.
func WithSlowStart(window time.Duration, minPercent, aggression float64) Option {
	return func(c *config) {
		if window <= 0 {
			c.slowStart = slowStartConfig{}
			return
		}
		if !(minPercent > 0 && minPercent <= 100) {
			minPercent = 10
		}
		if !(aggression > 0) {
			aggression = 1
		}
		c.slowStart = slowStartConfig{window: window, minFactor: minPercent / 100, aggression: aggression}
	}
}

// startRampLocked starts ep's slow start at now, if slow start is on.
// s.mu must be held.
func (s *endpointSet) startRampLocked(ep *endpoint, now int64) {
	if s.cfg.slowStart.window > 0 {
		ep.rampStart.Store(now)
	}
}

// rampFactor returns ep's weight factor at now: 1 outside a slow start.
func (c *slowStartConfig) rampFactor(ep *endpoint, now int64) float64 {
	start := ep.rampStart.Load()
	if start == 0 || now-start >= int64(c.window) {
		return 1
	}
	f := float64(now-start) / float64(c.window)
	if c.aggression != 1 {
		f = math.Pow(f, 1/c.aggression)
	}
	return max(f, c.minFactor)
}

// chooser is a policy's choice of an endpoint of eps, which is not empty,
// other than avoid if it can (avoid may be nil).
type chooser func(eps []*endpoint, avoid *endpoint) *endpoint

// pickRamping chooses an endpoint of snap, whose rampUntil is set, with
// choose: a choice of a ramping endpoint stands with probability equal to
// its factor, and otherwise choose is asked again, to avoid that endpoint
// (so that a policy whose choice is certain, such as the least loaded of
// two, moves on), up to maxRampTries times; then the choice with the
// highest factor stands. Once every slow start of snap is over, it
// publishes a snapshot without them, so that picks stop reading the clock.
func (s *endpointSet) pickRamping(snap *snapshot, choose chooser) *endpoint {
	now := mono()
	if now >= snap.rampUntil {
		s.endRamps(snap)
		return choose(snap.healthy, nil)
	}
	var best, turnedDown *endpoint
	bestFactor := -1.0
	for range maxRampTries {
		ep := choose(snap.healthy, turnedDown)
		f := s.cfg.slowStart.rampFactor(ep, now)
		if f >= 1 || rand.Float64() < f {
			return ep
		}
		if f > bestFactor {
			best, bestFactor = ep, f
		}
		turnedDown = ep
	}
	return best
}

// endRamps replaces snap, whose slow starts are over, if it is still the
// current snapshot.
func (s *endpointSet) endRamps(snap *snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap.Load() == snap {
		s.publishLocked(snap.all, mono())
	}
}
