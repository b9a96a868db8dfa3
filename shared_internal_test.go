package connpool

import (
	"sync"
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

// TestConcurrentEndsOfOneSharedLease ends one lease on a shared value from
// two goroutines at once, with each pair of Close, Release and the
// immediate release of clientpool: exactly one ends it, the other gets
// ErrConnClosed, and the value's count of leases stays right, so that the
// pool ends with nothing in use.
func TestConcurrentEndsOfOneSharedLease(t *testing.T) {
	ends := map[string]func(*Conn) error{
		"Close":      (*Conn).Close,
		"Release":    (*Conn).Release,
		"ReleaseNow": func(c *Conn) error { return c.release(true) },
	}
	for firstName, first := range ends {
		for secondName, second := range ends {
			t.Run(firstName+"/"+secondName, func(t *testing.T) {
				var d testnet.FakeDialer
				p, err := New(d.Dial, 4, time.Minute, withShares(2))
				require.NoError(t, err)
				defer p.Close()
				other, err := p.Get("a:1") // a second lease keeps the value shared
				require.NoError(t, err)
				for range 100 {
					c, err := p.Get("a:1")
					require.NoError(t, err)
					h := c.(*Conn)
					require.True(t, h.has(sharedBit))
					errs := make([]error, 2)
					var wg sync.WaitGroup
					wg.Go(func() { errs[0] = first(h) })
					wg.Go(func() { errs[1] = second(h) })
					wg.Wait()
					ended := 0
					for _, err := range errs {
						if err == nil {
							ended++
						} else {
							require.ErrorIs(t, err, ErrConnClosed)
						}
					}
					require.Equal(t, 1, ended, "errors: %v", errs)
				}
				require.NoError(t, other.Close())
				s := p.Stats()
				require.Zero(t, s.InUse, "%+v", s)
				require.Zero(t, s.Leases, "%+v", s)
			})
		}
	}
}
