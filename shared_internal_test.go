package connpool

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/internal/testnet"
)

func withShares(n int) Option {
	return func(o *options) { o.shares, o.sharesSet = n, true }
}

// A checkout never gets a conn past its max lifetime while the coarse clock
// lags by less than the margin (clock.go): near the limit it reads the
// clock exactly. That holds for a share of a value in use too.
func TestSharedLeaseNeverLandsOnAValuePastItsLifetime(t *testing.T) {
	var d testnet.FakeDialer
	clock := &fakeClock{lag: true}
	clock.now.Store(int64(time.Hour))
	clock.publish(int64(time.Hour))
	p, err := New(d.Dial, 4, 0, WithMaxLifetime(time.Hour), withClock(clock), withShares(4))
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })

	c1, err := p.Get("a:1")
	require.NoError(t, err)
	h1 := c1.(*Conn)
	require.True(t, h1.has(sharedBit))
	deadline := h1.load().deadline

	// The value reached its lifetime; the coarse clock lags by 100 ms, less
	// than the margin (two ticks of 250 ms).
	clock.now.Store(deadline)
	clock.publish(deadline - int64(100*time.Millisecond))
	require.Less(t, int64(100*time.Millisecond), p.margin)

	c2, err := p.Get("a:1")
	require.NoError(t, err)
	defer c2.Close()
	defer c1.Close()
	require.NotSame(t, h1.load(), c2.(*Conn).load(),
		"a new lease was put on a value past its max lifetime (deadline %d, clock %d)", deadline, clock.now.Load())
}
