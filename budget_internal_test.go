package connpool

import (
	"errors"
	"math"
	"net"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/internal/testnet"
)

// Regression: with the budget in float32, small shares stopped filling it
// (1e-7) or paid in about twice the share (1e-6). Each checkout calls
// depositLocked once (acquire); n checkouts must bank
// floor(n × share/(1+share)) retries, up to 100, as WithRetryBudget states.
func TestRetryBudgetBanksWhatCheckoutsPaidIn(t *testing.T) {
	for _, tc := range []struct {
		share     float64
		checkouts int
	}{{1e-7, 40_000_000}, {1e-6, 20_000_000}} {
		t.Run(strconv.FormatFloat(tc.share, 'g', -1, 64), func(t *testing.T) {
			var d testnet.FakeDialer
			p, err := New(d.Dial, 4, 0, WithRetryBudget(tc.share, 0))
			require.NoError(t, err)
			defer p.Close()
			b := p.buckets.lookup("a:1")
			b.mu.Lock()
			for range tc.checkouts {
				b.depositLocked()
			}
			b.mu.Unlock()
			retries := 0
			for p.SpendRetry("a:1") {
				retries++
			}
			want := int(math.Min(math.Floor(float64(tc.checkouts)*tc.share/(1+tc.share)), maxBankedRetries))
			assert.Equal(t, want, retries, "%d checkouts at share %g", tc.checkouts, tc.share)
		})
	}
}

// Regression: every round of a checkout paid into the retry budget, so a
// Get that found n dead idle conns paid in n+1 times. After a backend
// restart, when every idle conn is dead, that banked the most retries
// exactly when they were least wanted. A checkout pays in once, however
// many conns it discards.
func TestCheckoutThatDiscardsDeadConnsPaysIntoTheBudgetOnce(t *testing.T) {
	const dead = 20
	share := 0.1
	var d testnet.FakeDialer
	var reject atomic.Bool
	validator := func(net.Conn) error {
		if reject.Load() {
			return errors.New("dead")
		}
		return nil
	}
	p, err := New(d.Dial, dead, 0, WithRetryBudget(share, 0), WithValidator(validator, 0))
	require.NoError(t, err)
	defer p.Close()
	conns := make([]net.Conn, dead)
	for i := range conns {
		conns[i], err = p.New("a:1")
		require.NoError(t, err)
	}
	for _, c := range conns {
		require.NoError(t, c.Close())
	}
	reject.Store(true)
	c, err := p.Get("a:1") // discards the dead idle conns, then dials
	require.NoError(t, err)
	require.NoError(t, c.Close())
	require.EqualValues(t, dead, p.Stats().Destinations[0].ClosedValidatorFailed)

	retries := 0
	for p.SpendRetry("a:1") {
		retries++
	}
	checkouts := dead + 1
	want := int(math.Floor(float64(checkouts) * share / (1 + share)))
	assert.Equal(t, want, retries, "%d checkouts at share %g", checkouts, share)
}
