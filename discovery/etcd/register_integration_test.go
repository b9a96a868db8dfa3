//go:build integration

package etcd

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Register promises to keep the backend registered while it runs. A lease
// that expires while etcd is out of reach for longer than the TTL (a
// partition, an etcd restart) deletes the key; the registration must put it
// back once etcd is reachable again, or the backend silently leaves every
// balancer for good.
func TestRegisterSurvivesALostLease(t *testing.T) {
	s := startEtcd(t)
	admin := s.newClient()
	defer admin.Close()
	px := startProxy(t, s.client)
	cli := s.newClient(px.ln.Addr().String())
	defer cli.Close()
	ctx := context.Background()

	r, err := Register(ctx, cli, prefix, "127.0.0.2:80", 1, 2*time.Second)
	require.NoError(t, err)
	defer r.Close(ctx)

	registered := func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		resp, err := admin.Get(cctx, prefix+"127.0.0.2:80")
		return err == nil && len(resp.Kvs) == 1
	}
	require.True(t, registered())

	px.pause() // etcd out of reach for longer than the TTL: the lease expires
	require.Eventually(t, func() bool { return !registered() }, 15*time.Second, 50*time.Millisecond,
		"the lease never expired")
	px.resume()

	require.Eventually(t, registered, 15*time.Second, 50*time.Millisecond,
		"the backend is still running (its Registration is not closed) but its key never came back")
	require.Positive(t, r.LostLeases())
}
