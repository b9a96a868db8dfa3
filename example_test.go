package connpool_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/seed73091bf1/connpool"
)

// startEcho starts an echo server listening on address, such as
// "127.0.0.1:0" for a port the kernel chooses, and returns the address it
// got. stop closes the listener and every session, and returns once they
// have all ended.
func startEcho(address string) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return "", nil, err
	}
	var sessions []net.Conn
	var wg sync.WaitGroup
	accepting := make(chan struct{})
	go func() {
		defer close(accepting)
		for {
			c, err := ln.Accept()
			if err != nil {
				return // the listener was closed
			}
			sessions = append(sessions, c)
			wg.Go(func() { io.Copy(c, c); c.Close() })
		}
	}()
	stop = func() {
		ln.Close()
		<-accepting // no session starts from now on
		for _, c := range sessions {
			c.Close()
		}
		wg.Wait()
	}
	return ln.Addr().String(), stop, nil
}

// roundTrip sends msg as one line on c and returns the line the server
// sends back, without its newline.
func roundTrip(c net.Conn, msg string) (string, error) {
	if _, err := fmt.Fprintln(c, msg); err != nil {
		return "", err
	}
	reply, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(reply, "\n"), err
}

// Get a conn, use it, and Close it to return it to the pool. The next Get
// reuses the same socket.
func Example() {
	addr, stop, err := startEcho("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer stop()

	dial := func(address string) (net.Conn, error) {
		return net.DialTimeout("tcp", address, time.Second)
	}
	pool, err := connpool.New(dial, 16, 90*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	for i := range 3 {
		conn, err := pool.Get(addr)
		if err != nil {
			log.Fatal(err)
		}
		reply, err := roundTrip(conn, fmt.Sprint("request ", i))
		if err != nil {
			conn.(*connpool.Conn).Release() // broken: close it, never pool it
			log.Fatal(err)
		}
		fmt.Println(reply)
		conn.Close() // back to the pool
	}

	s := pool.Stats()
	fmt.Printf("dials: %d, reuses: %d, idle: %d\n", s.Dials, s.Reuses, s.Idle)
	// Output:
	// request 0
	// request 1
	// request 2
	// dials: 1, reuses: 2, idle: 1
}

// When a conn turns out to be dead, Release it and retry on a fresh conn from
// New: after a backend restart, the other idle conns of the address are likely
// dead too, so Get might hand out another one. The built-in liveness check
// catches most dead conns before Get hands them out; it is off here to show
// the retry.
func ExampleConn_Release() {
	addr, stop, err := startEcho("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	dial := func(address string) (net.Conn, error) { return net.Dial("tcp", address) }
	pool, err := connpool.New(dial, 16, time.Minute, connpool.WithoutLivenessCheck())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	conn, err := pool.Get(addr)
	if err != nil {
		log.Fatal(err)
	}
	conn.Close()

	// The backend restarts on the same address: the idle conn dies with it.
	stop()
	if _, stop, err = startEcho(addr); err != nil {
		log.Fatal(err)
	}
	defer stop()

	conn, err = pool.Get(addr)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := roundTrip(conn, "hello"); err != nil {
		conn.(*connpool.Conn).Release() // dead: close it, never pool it
		if conn, err = pool.New(addr); err != nil {
			log.Fatal(err)
		}
		_, err = roundTrip(conn, "hello")
		fmt.Println("retried on a fresh conn:", err == nil)
	}
	conn.Close()

	fmt.Println("released:", pool.Stats().Released)
	// Output:
	// retried on a fresh conn: true
	// released: 1
}

// By default Get peeks at an idle conn before handing it out, so a conn the
// backend closed is discarded, and Reused tells the caller what it got.
func ExampleConn_Reused() {
	addr, stop, err := startEcho("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	dial := func(address string) (net.Conn, error) { return net.Dial("tcp", address) }
	pool, err := connpool.New(dial, 16, time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	conn, err := pool.Get(addr)
	if err != nil {
		log.Fatal(err)
	}
	conn.Close()
	conn, err = pool.Get(addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("reused:", conn.(*connpool.Conn).Reused())
	conn.Close()

	// The backend restarts on the same address: the idle conn dies with it.
	stop()
	if _, stop, err = startEcho(addr); err != nil {
		log.Fatal(err)
	}
	defer stop()

	conn, err = pool.Get(addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("reused:", conn.(*connpool.Conn).Reused())
	reply, err := roundTrip(conn, "hello")
	fmt.Println("reply:", reply, err)
	conn.Close()
	fmt.Println("dead at checkout:", pool.Stats().ClosedDeadAtCheckout)
	// Output:
	// reused: true
	// reused: false
	// reply: hello <nil>
	// dead at checkout: 1
}

// After Close, Get fails with ErrClosed and does not dial.
func ExamplePool_Close() {
	dial := func(address string) (net.Conn, error) { return net.Dial("tcp", address) }
	pool, err := connpool.New(dial, 4, time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(pool.Close())
	_, err = pool.Get("127.0.0.1:1")
	fmt.Println(errors.Is(err, connpool.ErrClosed))
	fmt.Println(pool.Close())
	// Output:
	// <nil>
	// true
	// connpool: pool closed
}

// Do checks out a conn, runs the request and ends the checkout itself. A
// request that fails on a reused conn the server closed is sent again on a
// fresh one, when that is safe; here the backend restarts between two
// requests, and the second still succeeds.
func ExamplePool_Do() {
	addr, stop, err := startEcho("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	dial := func(address string) (net.Conn, error) { return net.Dial("tcp", address) }
	// The liveness check would find the dead conn before the request; it is
	// off here to show the retry.
	pool, err := connpool.New(dial, 16, time.Minute, connpool.WithoutLivenessCheck())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	echo := func(c *connpool.Conn) error {
		reply, err := roundTrip(c, "hello")
		if err != nil {
			return err // the conn is released
		}
		fmt.Println(reply)
		return nil // the conn goes back to the pool
	}
	ctx := context.Background()
	if err := pool.Do(ctx, addr, echo, connpool.Idempotent()); err != nil {
		log.Fatal(err)
	}

	// The backend restarts on the same address: the idle conn dies with it.
	stop()
	if _, stop, err = startEcho(addr); err != nil {
		log.Fatal(err)
	}
	defer stop()

	if err := pool.Do(ctx, addr, echo, connpool.Idempotent()); err != nil {
		log.Fatal(err)
	}
	fmt.Println("retries:", pool.Stats().Retries)
	// Output:
	// hello
	// hello
	// retries: 1
}

// GetContext stops waiting for a conn when its context ends. Here the
// address is at its WithMaxActive limit of one conn, which another request
// holds.
func ExamplePool_GetContext() {
	addr, stop, err := startEcho("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	dial := func(address string) (net.Conn, error) { return net.Dial("tcp", address) }
	pool, err := connpool.New(dial, 4, time.Minute, connpool.WithMaxActive(1))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	held, err := pool.Get(addr)
	if err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = pool.GetContext(ctx, addr) // waits for the held conn, then gives up
	fmt.Println("deadline exceeded:", errors.Is(err, context.DeadlineExceeded))

	held.Close() // back to the pool: the next checkout gets it
	conn, err := pool.GetContext(context.Background(), addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("reused:", conn.(*connpool.Conn).Reused())
	conn.Close()
	// Output:
	// deadline exceeded: true
	// reused: true
}

// WithMaxActive caps the conns of each address; at the cap, checkouts wait
// in line for a conn to come back. WithWaitTimeout bounds that wait, after
// which the checkout fails with ErrExhausted.
func ExampleWithMaxActive() {
	addr, stop, err := startEcho("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	dial := func(address string) (net.Conn, error) { return net.Dial("tcp", address) }
	pool, err := connpool.New(dial, 4, time.Minute,
		connpool.WithMaxActive(1),
		connpool.WithWaitTimeout(20*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	held, err := pool.Get(addr) // takes the only conn the address may have
	if err != nil {
		log.Fatal(err)
	}
	_, err = pool.Get(addr)
	fmt.Println(err)
	fmt.Println("exhausted:", errors.Is(err, connpool.ErrExhausted))
	held.Close()

	s := pool.Stats()
	fmt.Printf("dials: %d, waits: %d\n", s.Dials, s.WaitCount)
	// Output:
	// connpool: no conn available: address at its active limit
	// exhausted: true
	// dials: 1, waits: 1
}

// Warm dials conns ahead of the first requests, such as for a backend that
// has just joined the set, so that they do not wait for a dial.
func ExamplePool_Warm() {
	addr, stop, err := startEcho("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	dial := func(address string) (net.Conn, error) { return net.Dial("tcp", address) }
	pool, err := connpool.New(dial, 4, time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := pool.Warm(ctx, addr, 3); err != nil {
		log.Fatal(err)
	}
	fmt.Println("idle after Warm:", pool.Stats().Idle)

	conn, err := pool.Get(addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("reused:", conn.(*connpool.Conn).Reused())
	conn.Close()
	// Output:
	// idle after Warm: 3
	// reused: true
}

// Drain retires the conns of a backend that leaves the set: idle conns are
// closed at once, conns in use when their holders return them.
func ExamplePool_Drain() {
	addr, stop, err := startEcho("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	dial := func(address string) (net.Conn, error) { return net.Dial("tcp", address) }
	pool, err := connpool.New(dial, 4, time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	inUse, err := pool.Get(addr)
	if err != nil {
		log.Fatal(err)
	}
	idle, err := pool.Get(addr)
	if err != nil {
		log.Fatal(err)
	}
	idle.Close()

	if err := pool.Drain(addr); err != nil {
		log.Fatal(err)
	}
	s := pool.Stats()
	fmt.Printf("after Drain: idle %d, in use %d, drained %d\n", s.Idle, s.InUse, s.ClosedDrained)

	inUse.Close() // closed rather than pooled
	s = pool.Stats()
	fmt.Printf("after Close: open %d, drained %d\n", s.Total, s.ClosedDrained)
	// Output:
	// after Drain: idle 0, in use 1, drained 1
	// after Close: open 0, drained 2
}

// Stats reports the conns of the pool and of each address, and counts what
// happened to them.
func ExamplePool_Stats() {
	addr, stop, err := startEcho("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	dial := func(address string) (net.Conn, error) { return net.Dial("tcp", address) }
	pool, err := connpool.New(dial, 4, time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	a, err := pool.Get(addr)
	if err != nil {
		log.Fatal(err)
	}
	b, err := pool.Get(addr)
	if err != nil {
		log.Fatal(err)
	}
	b.Close()
	if b, err = pool.Get(addr); err != nil { // reuses the idle conn
		log.Fatal(err)
	}
	b.Close()

	s := pool.Stats()
	fmt.Printf("pool: open %d, idle %d, in use %d\n", s.Total, s.Idle, s.InUse)
	fmt.Printf("dials %d, reuses %d\n", s.Dials, s.Reuses)
	for _, d := range s.Destinations {
		fmt.Printf("address ok: %t, idle %d, in use %d\n", d.Address == addr, d.Idle, d.InUse)
	}
	a.Close()
	// Output:
	// pool: open 2, idle 1, in use 1
	// dials 2, reuses 1
	// address ok: true, idle 1, in use 1
}

// A Trace reports each event of the pool's conns as it happens, for logs
// and metrics.
func ExampleWithTrace() {
	addr, stop, err := startEcho("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	trace := &connpool.Trace{
		DialStart: func(string) { fmt.Println("dial") },
		GotConn: func(info connpool.GotConnInfo) {
			fmt.Println("got conn, reused:", info.Reused)
		},
		PutConn: func(string) { fmt.Println("put conn") },
		ConnClosed: func(_ string, reason connpool.CloseReason) {
			fmt.Println("closed:", reason)
		},
	}
	dial := func(address string) (net.Conn, error) { return net.Dial("tcp", address) }
	pool, err := connpool.New(dial, 4, time.Minute, connpool.WithTrace(trace))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	for range 2 {
		conn, err := pool.Get(addr)
		if err != nil {
			log.Fatal(err)
		}
		conn.Close()
	}
	conn, err := pool.Get(addr)
	if err != nil {
		log.Fatal(err)
	}
	conn.(*connpool.Conn).Release()
	// Output:
	// dial
	// got conn, reused: false
	// put conn
	// got conn, reused: true
	// put conn
	// got conn, reused: true
	// closed: released
}

// WithLeakDetection reports conns checked out and never returned, with the
// stack of the checkout, so that the missing Close can be found.
func ExampleWithLeakDetection() {
	addr, stop, err := startEcho("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	leaks := make(chan connpool.LeakReport, 1)
	dial := func(address string) (net.Conn, error) { return net.Dial("tcp", address) }
	pool, err := connpool.New(dial, 4, time.Minute,
		connpool.WithLeakDetection(10*time.Millisecond, func(r connpool.LeakReport) { leaks <- r }))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	conn, err := pool.Get(addr) // held past the threshold
	if err != nil {
		log.Fatal(err)
	}
	leak := <-leaks
	fmt.Println("address ok:", leak.Address == addr)
	fmt.Println("held at least 10ms:", leak.Held >= 10*time.Millisecond)
	fmt.Println("taken by:", strings.SplitN(leak.Stack, "\n", 2)[0])
	conn.Close()
	// Output:
	// address ok: true
	// held at least 10ms: true
	// taken by: github.com/seed73091bf1/connpool_test.ExampleWithLeakDetection
}
