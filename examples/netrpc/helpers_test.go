package netrpc_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed73091bf1/connpool/clientpool"
	"github.com/seed73091bf1/connpool/examples/netrpc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout bounds every test; none needs more than a second.
const testTimeout = 20 * time.Second

// testContext returns a context that ends after testTimeout or with the
// test.
func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// startServers starts n servers on loopback and kills them when the test
// ends; it returns them with their addresses.
func startServers(t testing.TB, n int) ([]*netrpc.Server, []string) {
	t.Helper()
	servers := make([]*netrpc.Server, n)
	addrs := make([]string, n)
	for i := range n {
		s, err := netrpc.NewServer()
		require.NoError(t, err)
		t.Cleanup(func() {
			if err := s.Kill(); err != nil && !errors.Is(err, netrpc.ErrServerKilled) {
				t.Errorf("kill %s: %v", s.Addr(), err)
			}
		})
		servers[i], addrs[i] = s, s.Addr()
	}
	return servers, addrs
}

// newCluster returns a Cluster over addrs, closed when the test ends
// (before the servers of startServers are killed, if they were started
// first).
func newCluster(t testing.TB, addrs []string, opts ...clientpool.Option) *netrpc.Cluster {
	t.Helper()
	cl, err := netrpc.NewCluster(addrs, opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := cl.Close(); err != nil && !errors.Is(err, clientpool.ErrClosed) {
			t.Errorf("close cluster: %v", err)
		}
	})
	return cl
}

// destination returns the pool's counts of addr, zero if the pool does not
// know it.
func destination(st clientpool.Stats, addr string) clientpool.DestinationStats {
	for _, d := range st.Destinations {
		if d.Address == addr {
			return d
		}
	}
	return clientpool.DestinationStats{Address: addr}
}

// waitFor polls check until it returns nil, and fails the test with its
// last error if that takes more than 5 seconds.
func waitFor(t testing.TB, check func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still after 5s: %v", err)
		}
		time.Sleep(time.Millisecond) // a polling interval, not a synchronisation
	}
}

// waitSessionsMatch waits until the sessions the server counts match the
// pool's counts of its address: one session accepted per dial, and one
// open per client the pool holds. The server sees a connection open or
// close a moment after the client does, hence the wait. Every lease must
// have ended.
func waitSessionsMatch(t testing.TB, cl *netrpc.Cluster, s *netrpc.Server) {
	t.Helper()
	waitFor(t, func() error {
		d := destination(cl.Stats(), s.Addr())
		if s.Accepted() != d.Dials || int64(s.Open()) != d.Total {
			return fmt.Errorf("%s: server accepted %d sessions, %d open; pool dialed %d, holds %d",
				s.Addr(), s.Accepted(), s.Open(), d.Dials, d.Total)
		}
		return nil
	})
}

// load is a run of calls of Cluster.Add from several goroutines.
type load struct {
	wg      sync.WaitGroup
	done    atomic.Int64  // calls finished, failed or not
	reached chan struct{} // closed once signalAt calls finished

	mu     sync.Mutex // protects the fields below
	failed int
	errs   []error // the first few errors
}

// startLoad starts workers goroutines that each call cl.Add calls times
// and check the sums. Once signalAt calls have finished, l.reached closes.
func startLoad(ctx context.Context, cl *netrpc.Cluster, workers, calls int, signalAt int64) *load {
	l := &load{reached: make(chan struct{})}
	for w := range workers {
		l.wg.Go(func() {
			for i := range calls {
				sum, err := cl.Add(ctx, w, i)
				if err == nil && sum != w+i {
					err = fmt.Errorf("Add(%d, %d) = %d", w, i, sum)
				}
				if err != nil {
					l.fail(err)
				}
				if l.done.Add(1) == signalAt {
					close(l.reached)
				}
			}
		})
	}
	return l
}

func (l *load) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failed++
	if len(l.errs) < 5 {
		l.errs = append(l.errs, err)
	}
}

// wait waits for every call and returns how many failed, with the first
// few errors.
func (l *load) wait() (failed int, errs []error) {
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed, l.errs
}
