package balancer_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// Fix (4) put retireIfGone in Conn.Release and Conn.CloseWithError, but
// balancer.Pool.Do ends a failed request with Conn.end(true, ...), which
// calls the embedded connpool.Conn.Release directly (balancer/do.go:147) and
// never retireIfGone. A Do that picked a backend just before an Update
// retired it, and whose request failed, leaves the retired backend with
// bucket.topUp set: WithMinIdle keeps it and dials it at every sweep.
func TestRetiredBackendIsForgottenAfterAFailedDo(t *testing.T) {
	var d testnet.FakeDialer
	// A 40 ms idle timeout makes the cleaner sweep every 10 ms.
	p, err := connpool.New(d.Dial, 4, 40*time.Millisecond, connpool.WithMinIdle(1))
	require.NoError(t, err)
	defer p.Close()

	g := &gatedBalancer{addr: "x:1", picking: make(chan struct{}), gate: make(chan struct{})}
	bp := balancer.NewPool(p, g, balancer.WithAttempts(1))
	bp.Update([]balancer.Endpoint{{Address: "x:1"}})
	done := make(chan error, 1)
	go func() {
		done <- bp.Do(context.Background(), func(c *balancer.Conn) error {
			return errors.New("request failed") // not clean: Do releases the conn
		}, connpool.WithRetries(0))
	}()
	<-g.picking                                      // x:1 is chosen...
	bp.Update([]balancer.Endpoint{{Address: "y:1"}}) // ...and retired
	close(g.gate)
	require.Error(t, <-done)

	dials := d.Dials()
	forgotten := func() bool {
		for _, dst := range p.Stats().Destinations {
			if dst.Address == "x:1" {
				return false
			}
		}
		return true
	}
	assert.Eventually(t, forgotten, 10*time.Second, 5*time.Millisecond, "the pool keeps the retired backend x:1 and tops it up")
	assert.Equal(t, dials, d.Dials(), "the retired backend is dialed again")
}

// hookConn runs onClose (once) when the pool closes it.
type hookConn struct {
	net.Conn
	onClose func()
}

func (c *hookConn) Close() error {
	if f := c.onClose; f != nil {
		c.onClose = nil
		f()
	}
	return c.Conn.Close()
}

// Update drains the removed addresses after releasing bp.mu
// (balancer/pool.go:191-196). An Update that removes x:1 and y:1 races with
// one that adds them back: the second Update completes between the first
// one's two Drains, and the first then drains an address that is in the
// set. Its conns are retired and, with WithMinIdle, its top-up stopped,
// although the last Update wants it. (Pre-existing; retireIfGone has the
// same check-then-drain shape.)
func TestUpdateDoesNotDrainAnAddressAddedBackMeanwhile(t *testing.T) {
	var hook atomic.Pointer[func()]
	var peers []net.Conn
	var mu sync.Mutex
	dial := func(string) (net.Conn, error) {
		a, b := net.Pipe()
		mu.Lock()
		peers = append(peers, b)
		mu.Unlock()
		return &hookConn{Conn: a, onClose: func() {
			if f := hook.Swap(nil); f != nil {
				(*f)()
			}
		}}, nil
	}
	p, err := connpool.New(dial, 4, 0)
	require.NoError(t, err)
	defer func() {
		p.Close()
		for _, c := range peers {
			c.Close()
		}
	}()
	both := []balancer.Endpoint{{Address: "x:1"}, {Address: "y:1"}}
	bp := balancer.NewPool(p, balancer.NewRoundRobin(both))
	for _, a := range []string{"x:1", "y:1"} {
		c, err := p.Get(a)
		require.NoError(t, err)
		require.NoError(t, c.Close())
	}
	readd := func() { bp.Update(both) } // the second Update, during the first one's first Drain
	hook.Store(&readd)
	bp.Update([]balancer.Endpoint{{Address: "z:1"}})

	drained := int64(0)
	for _, dst := range p.Stats().Destinations {
		drained += dst.ClosedDrained
	}
	t.Logf("ClosedDrained over x:1 and y:1: %d", drained)
	assert.EqualValues(t, 1, drained, "an address already back in the set was drained by the older Update")
}
