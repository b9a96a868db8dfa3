package connpool

import (
	"math"
	"strconv"
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
