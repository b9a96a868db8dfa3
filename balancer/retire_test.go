package balancer_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// gatedBalancer picks its one address once the test lets it return: a
// Pick that chose an address just before an Update removed it.
type gatedBalancer struct {
	addr    string
	picking chan struct{}
	gate    chan struct{}
}

func (g *gatedBalancer) Pick(context.Context) (string, func(error), error) {
	g.picking <- struct{}{}
	<-g.gate
	return g.addr, func(error) {}, nil
}

func (g *gatedBalancer) Update([]balancer.Endpoint) {}

// Regression: a request that picked a backend just before an Update retired
// it checked out after the Update's Drain, which with WithMinIdle made the
// pool keep the retired backend and dial it at every sweep, when the
// request ended with Release or its dial failed (Close drained it again).
func TestRetiredBackendIsForgottenAfterALateCheckout(t *testing.T) {
	for _, end := range []string{"release", "dial fails"} {
		t.Run(end, func(t *testing.T) {
			var d testnet.FakeDialer
			var refuse atomic.Bool
			dial := func(address string) (net.Conn, error) {
				if refuse.Load() {
					return nil, errors.New("connection refused")
				}
				return d.Dial(address)
			}
			// A 40 ms idle timeout makes the cleaner sweep every 10 ms.
			p, err := connpool.New(dial, 4, 40*time.Millisecond, connpool.WithMinIdle(1))
			require.NoError(t, err)
			defer p.Close()
			c, err := p.Get("x:1")
			require.NoError(t, err)
			require.NoError(t, c.Close())

			g := &gatedBalancer{addr: "x:1", picking: make(chan struct{}), gate: make(chan struct{})}
			bp := balancer.NewPool(p, g, balancer.WithAttempts(1))
			bp.Update([]balancer.Endpoint{{Address: "x:1"}})
			type result struct {
				c   net.Conn
				err error
			}
			got := make(chan result, 1)
			go func() {
				c, err := bp.Get(context.Background())
				got <- result{c, err}
			}()
			<-g.picking                                      // x:1 is chosen...
			bp.Update([]balancer.Endpoint{{Address: "y:1"}}) // ...and retired
			refuse.Store(end == "dial fails")
			close(g.gate)
			r := <-got
			if end == "release" {
				require.NoError(t, r.err)
				require.NoError(t, r.c.(*balancer.Conn).Release())
			} else {
				require.Error(t, r.err)
			}
			require.Eventually(t, func() bool {
				for _, dst := range p.Stats().Destinations {
					if dst.Address == "x:1" {
						return false
					}
				}
				return true
			}, 10*time.Second, 5*time.Millisecond, "the pool keeps the retired backend x:1")
		})
	}
}
