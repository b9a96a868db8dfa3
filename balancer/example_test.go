package balancer_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
)

// startEcho starts an echo server on a port the kernel chooses and returns
// its address. stop closes the listener and every session, and returns once
// they have all ended.
func startEcho() (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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

// A round-robin balancer hands out its endpoints in turn, starting at a
// random one.
func ExampleRoundRobin() {
	rr := balancer.NewRoundRobin([]balancer.Endpoint{
		{Address: "10.0.0.1:11211"},
		{Address: "10.0.0.2:11211"},
	})
	counts := map[string]int{}
	for range 10 {
		addr, done, err := rr.Pick(context.Background())
		if err != nil {
			fmt.Println(err)
			return
		}
		counts[addr]++
		done(nil) // report the request's outcome
	}
	fmt.Println(counts["10.0.0.1:11211"], counts["10.0.0.2:11211"])
	// Output: 5 5
}

// Maglev sends every request with the same key, set with WithKey, to the
// same backend, so that a backend's cache holds the keys it is asked for,
// while the keys spread evenly over the backends.
func ExampleMaglev() {
	m := balancer.NewMaglev([]balancer.Endpoint{
		{Address: "10.0.0.1:11211"},
		{Address: "10.0.0.2:11211"},
		{Address: "10.0.0.3:11211"},
	})
	backendOf := func(key string) string {
		addr, done, err := m.Pick(balancer.WithKey(context.Background(), key))
		if err != nil {
			log.Fatal(err)
		}
		done(balancer.ErrPickNotUsed) // a lookup, not a request
		return addr
	}

	first := backendOf("user:42")
	same := true
	for range 100 {
		same = same && backendOf("user:42") == first
	}
	fmt.Println("user:42 always goes to one backend:", same)

	used := map[string]bool{}
	for i := range 1000 {
		used[backendOf(fmt.Sprint("user:", i))] = true
	}
	fmt.Println("backends that 1000 keys go to:", len(used))
	// Output:
	// user:42 always goes to one backend: true
	// backends that 1000 keys go to: 3
}

// PeakEWMA steers requests away from a slow backend: of two backends, it
// picks the one whose latency, times its requests in flight plus one, is
// lower.
func ExamplePeakEWMA() {
	lb := balancer.NewPeakEWMA([]balancer.Endpoint{
		{Address: "10.0.0.1:6379"},
		{Address: "10.0.0.2:6379"},
	})
	ctx := context.Background()

	// Two requests at once: the second goes to the other backend, since
	// the first has a request in flight and neither has been measured.
	slow, slowDone, err := lb.Pick(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fast, fastDone, err := lb.Pick(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fastDone(nil)                     // this backend answers at once
	time.Sleep(50 * time.Millisecond) // the other takes 50 ms
	slowDone(nil)
	fmt.Println("two backends measured:", slow != fast)

	counts := map[string]int{}
	for range 10 {
		addr, done, err := lb.Pick(ctx)
		if err != nil {
			log.Fatal(err)
		}
		counts[addr]++
		done(nil)
	}
	fmt.Println("requests to the fast backend:", counts[fast])
	fmt.Println("requests to the slow backend:", counts[slow])
	// Output:
	// two backends measured: true
	// requests to the fast backend: 10
	// requests to the slow backend: 0
}

// A balancer.Pool picks a backend per request, checks out a pooled conn to
// it, and reports the outcome when the conn is closed or released.
func ExamplePool() {
	var eps []balancer.Endpoint
	for range 3 {
		addr, stop, err := startEcho()
		if err != nil {
			log.Fatal(err)
		}
		defer stop()
		eps = append(eps, balancer.Endpoint{Address: addr})
	}

	dial := func(address string) (net.Conn, error) { return net.DialTimeout("tcp", address, time.Second) }
	pool, err := connpool.New(dial, 8, 90*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	bp := balancer.NewPool(pool, balancer.NewLeastRequest(nil))
	bp.Update(eps)

	ok := 0
	for i := range 30 {
		conn, err := bp.Get(context.Background())
		if err != nil {
			log.Fatal(err)
		}
		if _, err := roundTrip(conn, fmt.Sprint("request ", i)); err != nil {
			conn.(*balancer.Conn).Release() // reports a failure
			continue
		}
		conn.Close() // back to the pool; reports a success
		ok++
	}
	fmt.Println("requests answered:", ok)
	fmt.Println("backends used:", len(pool.Stats().Destinations))
	// Output:
	// requests answered: 30
	// backends used: 3
}

// Do picks a backend, checks out a conn to it, runs the request and ends
// the checkout itself, reporting the outcome to the balancer. An idempotent
// request whose backend fails mid-request is sent again to another.
func ExamplePool_Do() {
	var eps []balancer.Endpoint
	for range 2 {
		addr, stop, err := startEcho()
		if err != nil {
			log.Fatal(err)
		}
		defer stop()
		eps = append(eps, balancer.Endpoint{Address: addr})
	}

	dial := func(address string) (net.Conn, error) { return net.DialTimeout("tcp", address, time.Second) }
	pool, err := connpool.New(dial, 8, 90*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	bp := balancer.NewPool(pool, balancer.NewRoundRobin(eps))

	for _, key := range []string{"a", "b"} {
		err := bp.Do(context.Background(), func(c *balancer.Conn) error {
			reply, err := roundTrip(c, "GET "+key)
			if err != nil {
				return err // the conn is released and the failure reported
			}
			fmt.Println(reply)
			return nil // the conn goes back to the pool
		}, connpool.Idempotent())
		if err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println("backends used:", len(pool.Stats().Destinations))
	// Output:
	// GET a
	// GET b
	// backends used: 2
}
