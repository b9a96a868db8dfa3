// Package bench compares connpool with other Go connection pools on one set
// of workloads. It is a module of its own so that users of connpool never
// download the other pools. Run it with run.sh.
package bench

import (
	"context"
	"math/rand/v2"
	"net"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	bconnpool "github.com/buraksezer/connpool"
	fatih "github.com/fatih/pool"
	"github.com/jackc/puddle/v2"
	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
	silenceper "github.com/silenceper/pool"
)

// fakeConn is a net.Conn that does nothing, so the hit-path workloads
// measure the pools alone. It answers the calls a pool makes on a new or
// returned conn; any other call panics.
type fakeConn struct{ net.Conn }

var fakeAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 11211}

func (fakeConn) Close() error         { return nil }
func (fakeConn) LocalAddr() net.Addr  { return fakeAddr }
func (fakeConn) RemoteAddr() net.Addr { return fakeAddr }

func fakeDial() (net.Conn, error) { return fakeConn{}, nil }

const warm = 8 // conns each pool holds idle before a run

// run drives get+put serially or from parallel goroutines. It stops the
// timer at the end, as b.Loop does, so that closing the pool is not timed.
func run(b *testing.B, parallel bool, op func(i int)) {
	b.ReportAllocs()
	b.ResetTimer()
	if !parallel {
		for i := 0; b.Loop(); i++ {
			op(i)
		}
		return
	}
	var seq atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(1)) * 7919
		for pb.Next() {
			i++
			op(i)
		}
	})
	b.StopTimer()
}

func modes(b *testing.B, f func(b *testing.B, parallel bool)) {
	b.Run("Serial", func(b *testing.B) { f(b, false) })
	b.Run("Parallel", func(b *testing.B) { f(b, true) })
}

// BenchmarkHitPath gets an idle conn and returns it, on fake conns.
func BenchmarkHitPath(b *testing.B) {
	b.Run("Pool=connpool/Keys=1", func(b *testing.B) { modes(b, connpoolHit(1, time.Minute)) })
	b.Run("Pool=connpool/Keys=1000", func(b *testing.B) { modes(b, connpoolHit(1000, time.Minute)) })
	b.Run("Pool=connpool/Keys=100000", func(b *testing.B) { modes(b, connpoolHit(100000, time.Minute)) })
	// connpool-timeout0 has no idle timeout: it shows what the timeout costs a Get.
	b.Run("Pool=connpool-timeout0/Keys=1", func(b *testing.B) { modes(b, connpoolHit(1, 0)) })
	b.Run("Pool=fatih/Keys=1", func(b *testing.B) {
		modes(b, func(b *testing.B, parallel bool) {
			p, err := fatih.NewChannelPool(warm, warm, fakeDial)
			must(b, err)
			defer p.Close()
			run(b, parallel, func(int) {
				c, err := p.Get()
				must(b, err)
				c.Close()
			})
		})
	})
	b.Run("Pool=buraksezer/Keys=1", func(b *testing.B) {
		modes(b, func(b *testing.B, parallel bool) {
			p, err := bconnpool.NewChannelPool(warm, warm, fakeDial)
			must(b, err)
			defer p.Close()
			ctx := context.Background()
			run(b, parallel, func(int) {
				c, err := p.Get(ctx)
				must(b, err)
				c.Close()
			})
		})
	})
	b.Run("Pool=silenceper/Keys=1", func(b *testing.B) {
		modes(b, func(b *testing.B, parallel bool) {
			p, err := silenceper.NewChannelPool(&silenceper.Config{
				InitialCap: warm, MaxIdle: warm, MaxCap: 64,
				Factory: func() (interface{}, error) { return fakeConn{}, nil },
				Close:   func(interface{}) error { return nil },
			})
			must(b, err)
			defer p.Release()
			run(b, parallel, func(int) {
				c, err := p.Get()
				must(b, err)
				p.Put(c)
			})
		})
	})
	b.Run("Pool=puddle/Keys=1", func(b *testing.B) {
		modes(b, func(b *testing.B, parallel bool) {
			p, err := puddle.NewPool(&puddle.Config[net.Conn]{
				Constructor: func(context.Context) (net.Conn, error) { return fakeConn{}, nil },
				Destructor:  func(net.Conn) {},
				MaxSize:     64,
			})
			must(b, err)
			defer p.Close()
			ctx := context.Background()
			run(b, parallel, func(int) {
				r, err := p.Acquire(ctx)
				must(b, err)
				r.Release()
			})
		})
	})
}

// connpoolHit gets and returns conns to keys addresses in the order of
// [addresses], on a pool with the given idle timeout.
func connpoolHit(keys int, timeout time.Duration) func(b *testing.B, parallel bool) {
	return func(b *testing.B, parallel bool) {
		p, err := connpool.New(func(string) (net.Conn, error) { return fakeDial() }, warm, timeout)
		must(b, err)
		defer p.Close()
		perKey := 4
		if keys > 1000 {
			perKey = 1 // keeps the setup of the largest run short
		}
		created, visits := addresses(keys)
		for _, a := range created {
			must(b, p.Warm(context.Background(), a, perKey))
		}
		run(b, parallel, func(i int) {
			c, err := p.Get(visits[i%keys])
			must(b, err)
			c.Close()
		})
	}
}

// addresses returns n distinct addresses twice: in the order to create
// them, and in a fixed shuffled order, the same for every pool and floor,
// for the ops to visit them. Visiting them in creation order would touch
// neighbouring memory on consecutive ops, which flatters any pool.
func addresses(n int) (created, visits []string) {
	created = make([]string, n)
	for i := range created {
		created[i] = "10.0." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250) + ":11211"
	}
	visits = make([]string, n)
	for i, j := range rand.New(rand.NewPCG(1, 2)).Perm(n) {
		visits[i] = created[j]
	}
	return created, visits
}

// BenchmarkEcho64 sends one line and reads the echo over loopback TCP from
// 64 goroutines, through each pool, with a dial per request, and on one
// conn per goroutine.
func BenchmarkEcho64(b *testing.B) {
	srv := testnet.StartEcho(b)
	addr := srv.Addr()
	dial := func() (net.Conn, error) { return net.Dial("tcp", addr) }
	echo := func(b *testing.B, c net.Conn) {
		if err := testnet.RoundTrip(c, "ping"); err != nil {
			b.Fatal(err)
		}
	}
	parallel64 := func(b *testing.B, op func()) {
		b.ReportAllocs()
		b.SetParallelism(32) // 64 goroutines on 2 cores
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				op()
			}
		})
	}
	b.Run("Pool=none", func(b *testing.B) {
		parallel64(b, func() {
			c, err := dial()
			must(b, err)
			echo(b, c)
			c.Close()
		})
	})
	// none-reuse does the round trip on one conn per goroutine, dialled
	// before the timer starts, without a pool: its B/op and allocs/op are
	// the round trip's own, for subtracting from the other rows.
	b.Run("Pool=none-reuse", func(b *testing.B) {
		const parallelism = 32
		conns := make(chan net.Conn, parallelism*runtime.GOMAXPROCS(0))
		for range cap(conns) {
			c, err := dial()
			must(b, err)
			defer c.Close()
			conns <- c
		}
		b.ReportAllocs()
		b.SetParallelism(parallelism)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			c := <-conns
			defer func() { conns <- c }()
			for pb.Next() {
				echo(b, c)
			}
		})
	})
	b.Run("Pool=connpool", func(b *testing.B) {
		p, err := connpool.New(func(a string) (net.Conn, error) { return net.Dial("tcp", a) }, 64, time.Minute)
		must(b, err)
		defer p.Close()
		parallel64(b, func() {
			c, err := p.Get(addr)
			must(b, err)
			echo(b, c)
			c.Close()
		})
	})
	b.Run("Pool=fatih", func(b *testing.B) {
		p, err := fatih.NewChannelPool(0, 64, dial)
		must(b, err)
		defer p.Close()
		parallel64(b, func() {
			c, err := p.Get()
			must(b, err)
			echo(b, c)
			c.Close()
		})
	})
	b.Run("Pool=buraksezer", func(b *testing.B) {
		p, err := bconnpool.NewChannelPool(0, 64, dial)
		must(b, err)
		defer p.Close()
		ctx := context.Background()
		parallel64(b, func() {
			c, err := p.Get(ctx)
			must(b, err)
			echo(b, c)
			c.Close()
		})
	})
	b.Run("Pool=silenceper", func(b *testing.B) {
		p, err := silenceper.NewChannelPool(&silenceper.Config{
			InitialCap: 0, MaxIdle: 64, MaxCap: 64,
			Factory: func() (interface{}, error) { return dial() },
			Close:   func(v interface{}) error { return v.(net.Conn).Close() },
		})
		must(b, err)
		defer p.Release()
		parallel64(b, func() {
			v, err := p.Get()
			must(b, err)
			echo(b, v.(net.Conn))
			p.Put(v)
		})
	})
	b.Run("Pool=puddle", func(b *testing.B) {
		p, err := puddle.NewPool(&puddle.Config[net.Conn]{
			Constructor: func(context.Context) (net.Conn, error) { return dial() },
			Destructor:  func(c net.Conn) { c.Close() },
			MaxSize:     64,
		})
		must(b, err)
		defer p.Close()
		ctx := context.Background()
		parallel64(b, func() {
			r, err := p.Acquire(ctx)
			must(b, err)
			echo(b, r.Value())
			r.Release()
		})
	})
}

func must(b *testing.B, err error) {
	if err != nil {
		b.Helper()
		b.Fatal(err)
	}
}
