package balancer_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// TestMaglevGetAvoidsADeadBackendForEveryKey checks that a keyed Get through
// Maglev reaches a live backend when one of five refuses dials and has not
// been ejected yet, whatever the key. The endpoints have fixed names, so the
// Maglev table, and each key's picks, are the same in every run; a dial
// function maps the names to a live echo server and to an address that
// refuses. With this set, re-keying by appending "\x00"+try to the key sent
// ten of the keys key-0 … key-999 back to the dead backend on all eight
// re-keyed picks, so Get settled for it three times and failed with
// "connection refused" (what cmd/connpool-demo saw once).
func TestMaglevGetAvoidsADeadBackendForEveryKey(t *testing.T) {
	live := testnet.StartEcho(t).Addr()
	dead := testnet.DeadAddr(t)
	const down = "down-153:7"
	route := map[string]string{down: dead}
	eps := []balancer.Endpoint{}
	for i := range 4 {
		name := "up-153-" + strconv.Itoa(i) + ":7"
		route[name] = live
		eps = append(eps, balancer.Endpoint{Address: name})
	}
	eps = append(eps, balancer.Endpoint{Address: down})
	dial := func(ctx context.Context, address string) (net.Conn, error) {
		d := net.Dialer{Timeout: time.Second}
		return d.DialContext(ctx, "tcp", route[address])
	}
	// A floor far above the retries made: the budget is not under test.
	p, err := connpool.New(nil, 4, time.Minute, connpool.WithDialContext(dial), connpool.WithRetryBudget(0, 1<<20))
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	// No ejection: every key must get past the dead backend on its own.
	bp := balancer.NewPool(p, balancer.NewMaglev(eps, balancer.WithEjection(0, time.Second, time.Second)))

	for n := range 1000 {
		key := "key-" + strconv.Itoa(n)
		c, err := bp.Get(balancer.WithKey(context.Background(), key))
		require.NoError(t, err, "key %q", key)
		conn := c.(*balancer.Conn)
		require.NotEqual(t, down, conn.Address(), "key %q", key)
		require.NoError(t, conn.Close())
	}
}
