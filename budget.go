package connpool

import (
	"fmt"
	"math"
	"sync"
)

// The retry budget bounds the retries of Do (and of balancer.Pool) as
// Finagle's RetryBudget does: retries may add at most a share of the
// requests, plus a small floor per second, so that retrying never turns an
// outage into a storm. Each address keeps its own tokens, under its
// bucket's lock: every checkout deposits, under the lock it takes anyway,
// so the budget costs the hit path no atomic operation, and a failing
// address spends only what its own requests paid in. The floor is shared
// by the pool.
//
// A retry is itself a checkout and deposits too. So that retries do not pay
// for retries, a checkout deposits share / (1 + share) of a token: over n
// first attempts and r retries, r ≤ (n + r) × share / (1 + share), which is
// r ≤ share × n.

// WithRetryBudget sets the retry budget of Do and of balancer.Pool: retries
// may add at most share of the checkouts (0.2: one retry per five
// requests), plus perSecond retries per second across the pool for
// addresses with few requests. An address banks at most 100 retries (at
// 0.2, what its last 600 requests paid in), enough for the burst of
// failures of a backend that dies under load, while a long healthy spell
// does not pay for a storm later. A retry the budget refuses is not made; Do returns the
// error, and the refusal is counted in RetryBudgetExhausted.
//
// Defaults: share 0.2, perSecond 10. A share of 0 and perSecond of 0 turn
// retries off. A share outside [0, 1] (or NaN) or a negative perSecond is
// rejected by [New].
func WithRetryBudget(share float64, perSecond int) Option {
	return func(o *options) {
		o.retryShare = share
		o.retryPerSecond = perSecond
		o.retryBudgetSet = true
	}
}

// maxBankedRetries is the most retries an address can bank. Finagle's
// budget banks what 10 s of requests paid in; counting requests rather
// than time keeps the clock off the hit path.
const maxBankedRetries = 100

// checkRetryBudget returns why the budget options are invalid, or "".
func (o *options) checkRetryBudget() string {
	switch {
	case !o.retryBudgetSet:
		return ""
	case math.IsNaN(o.retryShare) || o.retryShare < 0 || o.retryShare > 1:
		return fmt.Sprintf("WithRetryBudget share %v is not in [0, 1]", o.retryShare)
	case o.retryPerSecond < 0:
		return fmt.Sprintf("WithRetryBudget perSecond %d is negative", o.retryPerSecond)
	}
	return ""
}

// retryFloor is the pool-wide allowance of perSecond retries per second,
// for addresses whose own tokens ran out. It starts full and refills
// continuously up to perSecond.
type retryFloor struct {
	perSecond float64

	mu     sync.Mutex // protects the fields below
	tokens float64
	last   int64 // clock reading of the last refill
}

// take spends one retry of the floor at now, if there is one.
func (f *retryFloor) take(now int64) bool {
	if f.perSecond == 0 {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if elapsed := now - f.last; elapsed > 0 {
		f.tokens = min(f.tokens+f.perSecond*float64(elapsed)/1e9, f.perSecond)
		f.last = now
	}
	if f.tokens < 1 {
		return false
	}
	f.tokens--
	return true
}

// depositLocked pays a checkout's share into the budget. b.mu must be held.
func (b *bucket) depositLocked() {
	b.retryTokens = min(b.retryTokens+b.pool.retryDeposit, maxBankedRetries)
}

// spendRetry spends one retry of the address's budget, or of the pool's
// floor, and counts it in Retries; or, if neither has one, counts the
// refusal in RetryBudgetExhausted. It reports whether the retry may go, or
// that b was dropped (and nothing was spent or counted).
func (b *bucket) spendRetry() (ok, dropped bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.dropped:
		return false, true
	case b.retryTokens >= 1:
		b.retryTokens--
		ok = true
	default:
		// Only for a retry the address cannot pay for: the floor reads
		// the clock and takes its own lock (after b.mu).
		ok = b.pool.retryFloor.take(b.pool.clock())
	}
	if ok {
		b.coldLocked().counters.Retries++
	} else {
		b.coldLocked().counters.RetryBudgetExhausted++
	}
	return ok, false
}

// SpendRetry spends one retry of address's retry budget (see
// [WithRetryBudget]) and reports whether the retry may go. Do and
// balancer.Pool call it before each retry; call it in a retry loop of your
// own, with the address whose request failed, to keep within the same
// budget. Spent retries are counted in Retries, refused ones in
// RetryBudgetExhausted.
func (p *Pool) SpendRetry(address string) bool {
	p.mustBeNew()
	b := p.buckets.lookup(address)
	for {
		ok, dropped := b.spendRetry()
		if !dropped {
			return ok
		}
		b = p.buckets.lookupSlow(address)
	}
}
