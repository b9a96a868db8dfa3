package grpcpool_test

import (
	"context"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/seed73091bf1/connpool/clientpool"
	grpcpool "github.com/seed73091bf1/connpool/examples/grpc"
)

// The shared-mode setting: a server that runs at most 8 streams per
// connection, a handler that takes 10 ms, and 128 callers.
const (
	streamLimit = 8
	handlerTime = 10 * time.Millisecond
	callers     = 128
	maxConns    = 16
)

// slowHealth answers Check after handlerTime and counts, per connection,
// the calls running at once.
type slowHealth struct {
	healthpb.UnimplementedHealthServer
	mu      sync.Mutex
	running map[string]int // by the client's address: one per connection
	peak    int            // the most calls one connection ran at once
}

func (s *slowHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	p, _ := peer.FromContext(ctx)
	conn := p.Addr.String()
	s.mu.Lock()
	s.running[conn]++
	s.peak = max(s.peak, s.running[conn])
	s.mu.Unlock()
	time.Sleep(handlerTime) // the handler's work
	s.mu.Lock()
	s.running[conn]--
	s.mu.Unlock()
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// stats returns the connections the server has seen and the peak.
func (s *slowHealth) stats() (conns, peak int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.running), s.peak
}

// countingListener counts the connections the server accepts, including
// those that never carry a call.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// startSlowServer starts a gRPC server limited to streamLimit streams per
// connection on loopback, stopped when the test ends. It returns the
// server's address, its health service and its listener.
func startSlowServer(tb testing.TB) (string, *slowHealth, *countingListener) {
	tb.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	lis := &countingListener{Listener: tcp}
	h := &slowHealth{running: map[string]int{}}
	srv := grpc.NewServer(grpc.MaxConcurrentStreams(streamLimit))
	healthpb.RegisterHealthServer(srv, h)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	tb.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return lis.Addr().String(), h, lis
}

// statsWatch samples the stats of one address until stop is called, and
// keeps the most values in use, the most leases and whether a sample ever
// had more leases than its shared values have room for.
type statsWatch struct {
	total, shared, leases int64
	overbooked            bool
}

func watchStats(pool *clientpool.Pool[*grpc.ClientConn], addr string) (stop func() statsWatch) {
	done := make(chan struct{})
	result := make(chan statsWatch)
	go func() {
		var w statsWatch
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			d := destination(pool.Stats(), addr)
			w.total = max(w.total, d.Total)
			w.shared = max(w.shared, d.Shared)
			w.leases = max(w.leases, d.Leases)
			w.overbooked = w.overbooked || d.Leases > d.Shared*streamLimit
			select {
			case <-done:
				result <- w
				return
			case <-tick.C:
			}
		}
	}()
	return func() statsWatch {
		close(done)
		return <-result
	}
}

func newSharedPool(tb testing.TB) *clientpool.Pool[*grpc.ClientConn] {
	tb.Helper()
	pool, err := grpcpool.NewPool(maxConns, time.Minute, 5*time.Second,
		clientpool.WithShared(streamLimit), clientpool.WithMaxActive(maxConns))
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = pool.Close() })
	return pool
}

func check(ctx context.Context, cc *grpc.ClientConn) error {
	_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func TestSharedModeKeepsWithinTheStreamLimit(t *testing.T) {
	ctx := testContext(t)
	addr, h, lis := startSlowServer(t)
	pool := newSharedPool(t)
	stopWatch := watchStats(pool, addr)
	var (
		wg     sync.WaitGroup
		failed atomic.Int64
	)
	for range callers {
		wg.Go(func() {
			for range 4 {
				if err := pool.Do(ctx, addr, func(cc *grpc.ClientConn) error { return check(ctx, cc) }); err != nil {
					failed.Add(1)
					t.Log(err)
				}
			}
		})
	}
	wg.Wait()
	w := stopWatch()
	conns, peak := h.stats()
	t.Logf("server: %d connections accepted, at most %d calls at once on one; pool: at most %d ClientConns open, %d in use, %d leases",
		lis.accepted.Load(), peak, w.total, w.shared, w.leases)
	assert.Zero(t, failed.Load(), "failed calls")
	assert.LessOrEqual(t, lis.accepted.Load(), int64(maxConns), "connections the server accepted")
	assert.LessOrEqual(t, conns, maxConns, "connections the server saw calls on")
	assert.LessOrEqual(t, w.total, int64(maxConns), "ClientConns open at once")
	assert.LessOrEqual(t, w.shared, int64(maxConns), "ClientConns in use at once")
	assert.LessOrEqual(t, w.leases, int64(callers), "leases at once")
	assert.False(t, w.overbooked, "more leases than shares")
	// grpc-go itself holds a connection to the server's stream limit, so
	// the server's count is a check of the setting; PeakLeases below is
	// the pool's own.
	assert.LessOrEqual(t, peak, streamLimit, "calls one connection ran at once")
	assert.Greater(t, peak, 1, "no connection carried two calls at once")
	d := destination(pool.Stats(), addr)
	assert.LessOrEqual(t, d.PeakLeases, int64(streamLimit))
	assert.LessOrEqual(t, d.Dials, int64(maxConns))
	assert.Zero(t, d.Leases)
}

// BenchmarkSharedThroughput sends b.N health checks from 128 callers to a
// server with a stream limit of 8 and a 10 ms handler: through one
// ClientConn that every caller uses (OneConn), and through a pool of up to
// 16 ClientConns with WithShared(8) (Shared). It reports calls per second
// and the median and 99th percentile latency. Run it with -benchtime in
// calls, such as -benchtime 4000x.
func BenchmarkSharedThroughput(b *testing.B) {
	for _, mode := range []string{"OneConn", "Shared"} {
		b.Run("Mode="+mode, func(b *testing.B) {
			ctx := context.Background()
			addr, _, _ := startSlowServer(b)
			var call func() error
			if mode == "OneConn" {
				cc, err := grpcpool.Dialer(5*time.Second)(ctx, addr)
				require.NoError(b, err)
				defer cc.Close()
				call = func() error { return check(ctx, cc) }
			} else {
				pool := newSharedPool(b)
				call = func() error {
					return pool.Do(ctx, addr, func(cc *grpc.ClientConn) error { return check(ctx, cc) })
				}
			}
			latencies := make([]time.Duration, b.N)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range callers {
				wg.Go(func() {
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						t0 := time.Now()
						if err := call(); err != nil {
							b.Error(err)
							return
						}
						latencies[i] = time.Since(t0)
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			slices.Sort(latencies)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
			b.ReportMetric(float64(latencies[len(latencies)/2])/1e6, "p50-ms")
			b.ReportMetric(float64(latencies[len(latencies)*99/100])/1e6, "p99-ms")
		})
	}
}
