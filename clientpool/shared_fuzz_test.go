package clientpool_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed73091bf1/connpool/clientpool"
)

// FuzzSharedLeases runs a sequence of leases, returns, releases, fresh
// dials, Do calls and drains in shared mode (2 leases per value, 2 values
// per address), decoded from the input, on one goroutine. After every step
// it checks that no value carries more than 2 leases, that no value takes
// a lease after a Release on it or a drain of its address, and that Stats
// count the leases and values the test holds and exactly the open values.
// At the end every value must be closed once.
func FuzzSharedLeases(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 1, 2, 3, 0, 4, 0, 5, 1, 6, 7})
	f.Add([]byte{0, 0, 0, 0, 0, 18, 0, 0, 7, 1, 1, 4, 0, 0, 3, 3})
	f.Add([]byte{0, 16, 32, 0, 16, 32, 2, 0, 0, 23, 21, 5, 133, 1, 1, 1})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 200 {
			ops = ops[:200]
		}
		var d dialer
		p, err := clientpool.New(d.dial, 2, 0, clientpool.WithShared(2),
			clientpool.WithMaxActive(2), clientpool.WithWaitTimeout(time.Nanosecond))
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		addrs := []string{"a", "b", "c"}
		var leases []*clientpool.Lease[*client]
		load := map[*client]int{}
		out := map[*client]bool{} // released or drained: takes no lease
		take := func(l *clientpool.Lease[*client], err error, addr string) {
			if errors.Is(err, clientpool.ErrExhausted) {
				return
			}
			if err != nil {
				t.Fatalf("lease of %s: %v", addr, err)
			}
			v := l.Value()
			if v.closed.Load() || v.address != addr || out[v] {
				t.Fatalf("client %d of %s leased for %s: closed %v, out of rotation %v", v.id, v.address, addr, v.closed.Load(), out[v])
			}
			if load[v]++; load[v] > 2 {
				t.Fatalf("client %d carries %d leases", v.id, load[v])
			}
			leases = append(leases, l)
		}
		var ended []*clientpool.Lease[*client]
		end := func(k int, how byte) {
			l := leases[k]
			leases = append(leases[:k], leases[k+1:]...)
			v := l.Value()
			var err error
			switch how {
			case 0:
				err = l.Close()
			case 1:
				out[v] = true
				err = l.Release()
			default:
				out[v] = true
				err = l.ReleaseNow()
				if !v.closed.Load() {
					t.Fatalf("client %d open after ReleaseNow", v.id)
				}
			}
			if err != nil {
				t.Fatalf("ending a lease: %v", err)
			}
			if load[v]--; load[v] == 0 {
				delete(load, v)
			}
			ended = append(ended, l)
		}
		errConn := errors.New("broken")
		for i, op := range ops {
			addr := addrs[int(op>>4)%len(addrs)]
			k := int(op>>4) % max(len(leases), 1)
			switch op & 0x0f % 8 {
			case 0:
				l, err := p.Get(ctx, addr)
				take(l, err, addr)
			case 1, 2, 3:
				if len(leases) > 0 {
					end(k, op&0x0f%8-1)
				}
			case 4:
				l, err := p.GetFresh(ctx, addr)
				take(l, err, addr)
			case 5:
				for v := range load {
					if v.address == addr {
						out[v] = true
					}
				}
				_ = p.Drain(addr)
			case 6:
				fail := op&0x80 != 0
				_ = p.Do(ctx, addr, func(c *client) error {
					if out[c] || load[c] >= 2 || c.closed.Load() {
						t.Fatalf("Do got client %d: out of rotation %v, %d leases, closed %v", c.id, out[c], load[c], c.closed.Load())
					}
					if fail {
						out[c] = true // Do releases it
						return errConn
					}
					return nil
				})
			case 7:
				if len(ended) > 0 {
					l := ended[k%len(ended)]
					if !errors.Is(l.Close(), clientpool.ErrLeaseEnded) || !errors.Is(l.ReleaseNow(), clientpool.ErrLeaseEnded) || l.Value() != nil {
						t.Fatal("an ended lease did something")
					}
				}
			}
			st := p.Stats()
			held := map[string]int64{}
			values := map[string]int64{}
			for v, n := range load {
				held[v.address] += int64(n)
				if !v.closed.Load() {
					values[v.address]++
				}
			}
			for _, ds := range st.Destinations {
				if ds.Leases != held[ds.Address] || ds.Shared != values[ds.Address] ||
					ds.InUse != ds.Shared || ds.Total != ds.Idle+ds.InUse || ds.Total > 2 || ds.PeakLeases > 2 {
					t.Fatalf("step %d (op %d): %s, shared %d, leases %d; the test holds %d leases on %d values",
						i, op, ds.String(), ds.Shared, ds.Leases, held[ds.Address], values[ds.Address])
				}
			}
			// A New at the limit closes an idle value in the background.
			deadline := time.Now().Add(5 * time.Second)
			for int64(d.open()) != st.Total && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
				st = p.Stats()
			}
			if open := d.open(); int64(open) != st.Total {
				t.Fatalf("step %d (op %d): %d values open, pool counts %d", i, op, open, st.Total)
			}
		}
		for len(leases) > 0 {
			end(0, 0)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, c := range d.clients {
			if c.closes.Load() != 1 {
				t.Fatalf("client %d closed %d times", c.id, c.closes.Load())
			}
		}
	})
}
