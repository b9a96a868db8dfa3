package connpool_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// Get a conn, use it, and Close it to return it to the pool. The next Get
// reuses the same socket.
func Example() {
	srv, err := testnet.ListenEcho() // a line echo server on 127.0.0.1
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	dial := func(address string) (net.Conn, error) {
		return net.DialTimeout("tcp", address, time.Second)
	}
	pool, err := connpool.New(dial, 16, 90*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	for i := range 3 {
		conn, err := pool.Get(srv.Addr())
		if err != nil {
			log.Fatal(err)
		}
		fmt.Fprintf(conn, "request %d\n", i)
		reply, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			conn.(*connpool.Conn).Release()
			log.Fatal(err)
		}
		fmt.Print(reply)
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
	srv, err := testnet.ListenEcho()
	if err != nil {
		log.Fatal(err)
	}
	dial := func(address string) (net.Conn, error) { return net.Dial("tcp", address) }
	pool, err := connpool.New(dial, 16, time.Minute, connpool.WithoutLivenessCheck())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	conn, err := pool.Get(srv.Addr())
	if err != nil {
		log.Fatal(err)
	}
	conn.Close()

	// The backend restarts: the idle conn dies with it.
	addr := srv.Addr()
	srv.Close()
	srv2, err := testnet.ListenEchoOn(addr)
	if err != nil {
		log.Fatal(err)
	}
	defer srv2.Close()

	conn, err = pool.Get(addr)
	if err != nil {
		log.Fatal(err)
	}
	if err := testnet.RoundTrip(conn, "hello"); err != nil {
		conn.(*connpool.Conn).Release() // dead: close it, never pool it
		if conn, err = pool.New(addr); err != nil {
			log.Fatal(err)
		}
		err = testnet.RoundTrip(conn, "hello")
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
	srv, err := testnet.ListenEcho()
	if err != nil {
		log.Fatal(err)
	}
	dial := func(address string) (net.Conn, error) { return net.Dial("tcp", address) }
	pool, err := connpool.New(dial, 16, time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	addr := srv.Addr()
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

	// The backend restarts: the idle conn dies with it.
	srv.Close()
	srv2, err := testnet.ListenEchoOn(addr)
	if err != nil {
		log.Fatal(err)
	}
	defer srv2.Close()

	conn, err = pool.Get(addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("reused:", conn.(*connpool.Conn).Reused())
	fmt.Println("works:", testnet.RoundTrip(conn, "hello") == nil)
	conn.Close()
	fmt.Println("dead at checkout:", pool.Stats().ClosedDeadAtCheckout)
	// Output:
	// reused: true
	// reused: false
	// works: true
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
	srv, err := testnet.ListenEcho()
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

	addr := srv.Addr()
	echo := func(c *connpool.Conn) error {
		if _, err := fmt.Fprintf(c, "hello\n"); err != nil {
			return err
		}
		reply, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		fmt.Print(reply)
		return nil
	}
	ctx := context.Background()
	if err := pool.Do(ctx, addr, echo, connpool.Idempotent()); err != nil {
		log.Fatal(err)
	}

	// The backend restarts: the idle conn dies with it.
	srv.Close()
	srv2, err := testnet.ListenEchoOn(addr)
	if err != nil {
		log.Fatal(err)
	}
	defer srv2.Close()

	if err := pool.Do(ctx, addr, echo, connpool.Idempotent()); err != nil {
		log.Fatal(err)
	}
	fmt.Println("retries:", pool.Stats().Retries)
	// Output:
	// hello
	// hello
	// retries: 1
}
