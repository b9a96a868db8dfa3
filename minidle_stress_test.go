package connpool

import (
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/internal/testnet"
)

// Random concurrent operations, with WithMinIdle, against real loopback
// sockets whose servers close their sessions at random; sweeps run
// concurrently. checkLocked panics on any miscount; at a quiescent point
// the counts must match the conns held, and after Close no socket is open.
func TestMinIdleStress(t *testing.T) {
	for _, cfg := range []struct {
		name               string
		maxActive, maxIdle int
		capacity, minIdle  int
		timeout, lifetime  time.Duration
	}{
		{"plain", 0, 0, 4, 2, 0, 0},
		{"maxactive", 3, 0, 4, 2, 0, 0},
		{"maxidle", 0, 3, 4, 2, 0, 0},
		{"all", 3, 4, 2, 3, 0, 0},
		{"timeout", 3, 4, 4, 2, 5 * time.Millisecond, 20 * time.Millisecond},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			var srvs []*testnet.EchoServer
			var addrs []string
			for range 3 {
				s := testnet.StartEcho(t)
				srvs = append(srvs, s)
				addrs = append(addrs, s.Addr())
			}
			dialer := net.Dialer{Timeout: 2 * time.Second}
			opts := []Option{WithMinIdle(cfg.minIdle), WithDialContext(func(ctx context.Context, a string) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", a) }),
				WithMaxActive(cfg.maxActive), WithMaxIdle(cfg.maxIdle), WithWaitTimeout(20 * time.Millisecond),
				WithMaxLifetime(cfg.lifetime)}
			p, err := New(nil, cfg.capacity, cfg.timeout, opts...)
			require.NoError(t, err)

			var wg sync.WaitGroup
			stopAt := time.Now().Add(700 * time.Millisecond)
			var sweepMu sync.Mutex
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(w), 7))
					var held []net.Conn
					for time.Now().Before(stopAt) {
						a := addrs[r.IntN(len(addrs))]
						switch op := r.IntN(20); {
						case op < 6 && len(held) < 3:
							c, err := p.Get(a)
							if err == nil {
								held = append(held, c)
							}
						case op < 8 && len(held) < 3:
							c, err := p.New(a)
							if err == nil {
								held = append(held, c)
							}
						case op < 13 && len(held) > 0:
							i := r.IntN(len(held))
							_ = held[i].Close()
							held = append(held[:i], held[i+1:]...)
						case op < 14 && len(held) > 0:
							i := r.IntN(len(held))
							_ = held[i].(*Conn).Release()
							held = append(held[:i], held[i+1:]...)
						case op < 15:
							_ = p.Drain(a)
						case op < 16:
							ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
							_ = p.Warm(ctx, a, 2)
							cancel()
						case op < 17:
							srvs[r.IntN(len(srvs))].CloseAll()
						case op < 19:
							sweepMu.Lock()
							p.sweep(p.readClock())
							sweepMu.Unlock()
						default:
							time.Sleep(time.Duration(r.IntN(200)) * time.Microsecond) // a pause between operations, not a wait for one
						}
					}
					for _, c := range held {
						_ = c.Close()
					}
				}()
			}
			wg.Wait()
			p.closers.Wait()
			// Quiescent: let Warm's background dials end.
			require.Eventually(t, func() bool {
				return p.Stats().InUse == 0 && !dialsOrClosesRunning(p)
			}, 10*time.Second, time.Millisecond)
			s := p.Stats()
			open := int64(0)
			for _, sv := range srvs {
				open += sv.Open()
			}
			assert.Eventually(t, func() bool {
				p.sweep(p.readClock()) // takes the dead idle conns out
				quiet(t, p)
				s = p.Stats()
				open = 0
				for _, sv := range srvs {
					open += sv.Open()
				}
				return open == s.Total
			}, 5*time.Second, time.Millisecond, "server sessions %d vs pool total %d", open, s.Total)
			require.NoError(t, p.Close())
			assert.Eventually(t, func() bool {
				open = 0
				for _, sv := range srvs {
					open += sv.Open()
				}
				return open == 0
			}, 5*time.Second, time.Millisecond, "sessions left open after Close: %d", open)
		})
	}
}

// quiet waits, without touching p.topUps (which the cleaner may Add to),
// until no dial or close runs in p, for at most 10 seconds.
func quiet(t *testing.T, p *Pool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		require.False(t, time.Now().After(deadline), "dials or closes still running after 10 s")
		if !dialsOrClosesRunning(p) {
			return
		}
		time.Sleep(100 * time.Microsecond) // poll interval
	}
}

// dialsOrClosesRunning reports whether a dial or a close runs in p.
func dialsOrClosesRunning(p *Pool) bool {
	running := false
	p.buckets.mu.Lock()
	p.buckets.eachLocked(func(b *bucket) {
		b.mu.Lock()
		running = running || b.dialing != 0 || b.closing != 0
		b.mu.Unlock()
	})
	p.buckets.mu.Unlock()
	return running
}
