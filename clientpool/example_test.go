package clientpool_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/rpc"
	"sync"
	"time"

	"github.com/seed73091bf1/connpool/clientpool"
)

// Arith is the RPC service of the example server.
type Arith struct{}

// Add sets sum to the sum of the two numbers.
func (Arith) Add(args [2]int, sum *int) error {
	*sum = args[0] + args[1]
	return nil
}

// Div sets q to the quotient of the two numbers.
func (Arith) Div(args [2]int, q *int) error {
	if args[1] == 0 {
		return errors.New("divide by zero")
	}
	*q = args[0] / args[1]
	return nil
}

// startRPC serves Arith over net/rpc on a port the kernel chooses and
// returns its address. stop closes the listener and returns once every
// session has ended, which a session does when its client closes it.
func startRPC() (addr string, stop func(), err error) {
	srv := rpc.NewServer()
	if err := srv.Register(Arith{}); err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // the listener was closed
			}
			wg.Go(func() { srv.ServeConn(c) })
		}
	})
	stop = func() {
		ln.Close()
		wg.Wait()
	}
	return ln.Addr().String(), stop, nil
}

// Pool *rpc.Client values per server address. Do leases a client, runs the
// call and returns the client to the pool, or closes it if the call broke
// it. An error the server sent back leaves the client fit for the next call:
// Clean tells Do to keep it.
func Example() {
	addr, stop, err := startRPC()
	if err != nil {
		log.Fatal(err)
	}
	defer stop() // runs last: the server's sessions end when the pool closes its clients

	dial := func(ctx context.Context, address string) (*rpc.Client, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", address)
		if err != nil {
			return nil, err
		}
		return rpc.NewClient(conn), nil
	}
	pool, err := clientpool.New(dial, 8, time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	call := func(method string, args [2]int) {
		var reply int
		err := pool.Do(context.Background(), addr, func(c *rpc.Client) error {
			err := c.Call(method, args, &reply)
			if _, ok := err.(rpc.ServerError); ok {
				return clientpool.Clean(err) // the server answered: keep the client
			}
			return err
		})
		var serverErr rpc.ServerError
		if errors.As(err, &serverErr) {
			fmt.Println(method, "error:", serverErr)
			return
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(method, reply)
	}
	call("Arith.Add", [2]int{2, 3})
	call("Arith.Div", [2]int{7, 0})
	call("Arith.Div", [2]int{7, 2})

	s := pool.Stats()
	fmt.Printf("dials: %d, reuses: %d\n", s.Dials, s.Reuses)
	// Output:
	// Arith.Add 5
	// Arith.Div error: divide by zero
	// Arith.Div 3
	// dials: 1, reuses: 2
}

// session stands for any client that has a Close method.
type session struct{ id int }

func (s *session) Close() error {
	fmt.Println("close session", s.id)
	return nil
}

// Get leases a value until Close returns it to the pool or Release closes
// it. Closing the pool closes the idle values.
func ExamplePool_Get() {
	var mu sync.Mutex // dials may run on goroutines of the pool's
	n := 0
	dial := func(ctx context.Context, address string) (*session, error) {
		mu.Lock()
		defer mu.Unlock()
		n++
		fmt.Println("dial", address)
		return &session{id: n}, nil
	}
	pool, err := clientpool.New(dial, 4, time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	for range 2 {
		lease, err := pool.Get(ctx, "db-1")
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("session", lease.Value().id, "reused:", lease.Reused())
		lease.Close()
	}
	lease, err := pool.Get(ctx, "db-1")
	if err != nil {
		log.Fatal(err)
	}
	lease.Release() // broken: closed, never pooled

	lease, err = pool.Get(ctx, "db-1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("session", lease.Value().id, "reused:", lease.Reused())
	lease.Close()

	pool.Close()
	// Output:
	// dial db-1
	// session 1 reused: false
	// session 1 reused: true
	// close session 1
	// dial db-1
	// session 2 reused: false
	// close session 2
}
