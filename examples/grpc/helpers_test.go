package grpcpool_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/clientpool"
	grpcpool "github.com/seed73091bf1/connpool/examples/grpc"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout bounds every test; none needs more than a few seconds.
const testTimeout = 30 * time.Second

// backend is an in-process gRPC server on loopback serving the standard
// health service, which counts the RPCs it receives.
type backend struct {
	addr   string
	srv    *grpc.Server
	health *health.Server
	calls  atomic.Int64
}

// startBackend starts a backend on 127.0.0.1:0 and stops it when the test
// ends.
func startBackend(t testing.TB) *backend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b := &backend{addr: lis.Addr().String(), health: health.NewServer()}
	b.srv = grpc.NewServer(grpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			b.calls.Add(1)
			return handler(ctx, req)
		}))
	healthpb.RegisterHealthServer(b.srv, b.health)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = b.srv.Serve(lis)
	}()
	t.Cleanup(func() {
		b.srv.Stop()
		<-served
	})
	return b
}

// startBackends starts n backends and returns them with their endpoints.
func startBackends(t testing.TB, n int) ([]*backend, []balancer.Endpoint) {
	t.Helper()
	bs := make([]*backend, n)
	eps := make([]balancer.Endpoint, n)
	for i := range bs {
		bs[i] = startBackend(t)
		eps[i] = balancer.Endpoint{Address: bs[i].addr}
	}
	return bs, eps
}

// newPool returns a pool made by grpcpool.NewPool, closed when the test
// ends.
func newPool(t testing.TB, capacity int, opts ...clientpool.Option) *clientpool.Pool[*grpc.ClientConn] {
	t.Helper()
	pool, err := grpcpool.NewPool(capacity, time.Minute, 5*time.Second, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pool.Close() }) // ErrClosed if the test closed it
	return pool
}

// testContext returns a context that ends with the test or after
// testTimeout.
func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// destination returns the stats of addr in st, zero if the pool no longer
// knows it.
func destination(st clientpool.Stats, addr string) clientpool.DestinationStats {
	for _, d := range st.Destinations {
		if d.Address == addr {
			return d
		}
	}
	return clientpool.DestinationStats{Address: addr}
}

// awaitNotReady waits, with ctx's deadline, until cc leaves READY: until
// gRPC noticed that its connection broke.
func awaitNotReady(ctx context.Context, t testing.TB, cc *grpc.ClientConn) {
	t.Helper()
	for s := cc.GetState(); s == connectivity.Ready; s = cc.GetState() {
		require.True(t, cc.WaitForStateChange(ctx, s), "ClientConn still READY when the context ended")
	}
}

// state returns the balancer's view of addr.
func state(rr *balancer.RoundRobin, addr string) balancer.State {
	for _, s := range rr.States() {
		if s.Address == addr {
			return s
		}
	}
	return balancer.State{}
}
