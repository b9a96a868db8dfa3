package clientpool_test

import (
	"context"
	"errors"
	"testing"

	"github.com/seed73091bf1/connpool/clientpool"
)

// FuzzLeases runs a sequence of leases, returns, releases, fresh dials, Do
// calls and drains, decoded from the input, on one goroutine, and checks
// after every step that no value is leased twice, that every count of
// Stats matches the leases the test holds, and that exactly the values the
// pool counts are open. At the end every value must be closed once.
func FuzzLeases(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 1, 2, 3, 0, 4, 0, 5, 1, 6})
	f.Add([]byte{0, 0, 16, 0, 32, 1, 4, 0, 0, 2, 0, 5, 3, 6, 1})
	f.Add([]byte{3, 3, 3, 19, 0, 4, 16, 1, 2, 1, 1, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 200 {
			ops = ops[:200]
		}
		var d dialer
		p, err := clientpool.New(d.dial, 2, 0)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		addrs := []string{"a", "b", "c"}
		type held struct {
			l    *clientpool.Lease[*client]
			addr string
		}
		var leases []held
		var ended []*clientpool.Lease[*client]
		take := func(l *clientpool.Lease[*client], err error, addr string) {
			if err != nil {
				t.Fatalf("lease of %s: %v", addr, err)
			}
			v := l.Value()
			for _, h := range leases {
				if h.l.Value() == v {
					t.Fatalf("client %d leased twice", v.id)
				}
			}
			if v.closed.Load() || v.address != addr {
				t.Fatalf("client %d of %s leased for %s, closed %v", v.id, v.address, addr, v.closed.Load())
			}
			leases = append(leases, held{l, addr})
		}
		end := func(k int, release bool) {
			h := leases[k]
			leases = append(leases[:k], leases[k+1:]...)
			var err error
			if release {
				err = h.l.Release()
			} else {
				err = h.l.Close()
			}
			if err != nil {
				t.Fatalf("ending a lease: %v", err)
			}
			ended = append(ended, h.l)
		}
		errApp := errors.New("app")
		for i, op := range ops {
			addr := addrs[int(op>>4)%len(addrs)]
			k := int(op>>4) % max(len(leases), 1)
			switch op & 0x0f % 7 {
			case 0:
				l, err := p.Get(ctx, addr)
				take(l, err, addr)
			case 1:
				if len(leases) > 0 {
					end(k, false)
				}
			case 2:
				if len(leases) > 0 {
					end(k, true)
				}
			case 3:
				l, err := p.GetFresh(ctx, addr)
				take(l, err, addr)
			case 4:
				_ = p.Drain(addr)
			case 5:
				fail := op&0x80 != 0
				_ = p.Do(ctx, addr, func(c *client) error {
					for _, h := range leases {
						if h.l.Value() == c {
							t.Fatalf("Do got client %d, which a lease holds", c.id)
						}
					}
					if fail {
						return errApp
					}
					return nil
				})
			case 6:
				if len(ended) > 0 {
					l := ended[k%len(ended)]
					if !errors.Is(l.Close(), clientpool.ErrLeaseEnded) || !errors.Is(l.Release(), clientpool.ErrLeaseEnded) || l.Value() != nil {
						t.Fatal("an ended lease did something")
					}
				}
			}
			st := p.Stats()
			inUse := map[string]int64{}
			for _, h := range leases {
				inUse[h.addr]++
			}
			for _, ds := range st.Destinations {
				if ds.InUse != inUse[ds.Address] || ds.Total != ds.Idle+ds.InUse || ds.Idle > 2 {
					t.Fatalf("step %d (op %d): %s, but %d leases held", i, op, ds.String(), inUse[ds.Address])
				}
			}
			if open := d.open(); int64(open) != st.Total {
				t.Fatalf("step %d (op %d): %d values open, pool counts %d", i, op, open, st.Total)
			}
		}
		for len(leases) > 0 {
			end(0, false)
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
