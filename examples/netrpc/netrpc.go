// Package netrpc pools net/rpc clients across several servers with
// clientpool, a round-robin balancer in front, and keeps every idempotent
// call succeeding while one of the servers dies (within the pool's retry
// budget). It imports nothing of
// connpool's internals and only the standard library besides connpool:
// copy it freely.
//
//	cl, err := netrpc.NewCluster([]string{"10.0.0.7:4000", "10.0.0.8:4000", "10.0.0.9:4000"})
//	...
//	defer cl.Close() // closes every pooled client
//	sum, err := cl.Add(ctx, 2, 3)
//
// It has three parts:
//   - [Client]: one *rpc.Client with the net.Conn it runs on, made by
//     [Dial]. Its NetConn method lets the pool check the socket of an idle
//     client before handing it out again, so a client whose server closed
//     the connection is discarded rather than used.
//   - [Cluster]: a clientpool.Pool of Clients per server address and a
//     clientpool.Balanced round robin over the addresses, which sends each
//     call through Balanced.Do as an idempotent request.
//   - [Server]: a small net/rpc server of the Arith service on a loopback
//     port, which counts its sessions and can be killed, for the tests and
//     the example.
//
// # Errors
//
// clientpool's Do recognises a broken connection only by the errors
// connpool.IsConnError knows (io.EOF, io.ErrUnexpectedEOF, ECONNRESET,
// EPIPE and the like), and retries an idempotent request on another client
// or server only after one of them. net/rpc reports the call that was in
// flight when its connection broke as io.ErrUnexpectedEOF, which Do knows,
// but every later call on that *rpc.Client as rpc.ErrShutdown, which it
// does not. A pooled client can be in that state when it is handed out: its
// server closed the connection just after the pool checked it. So
// [Client.Call] turns rpc.ErrShutdown into an error that wraps both it and
// io.ErrUnexpectedEOF: Do releases the client and retries the call, and
// errors.Is still sees rpc.ErrShutdown. An error the service returned (an
// rpc.ServerError) leaves the connection clean, so Call marks it with
// clientpool.Clean: the client goes back to the pool and the call is not
// retried.
//
// # Exclusive and shared leases
//
// An *rpc.Client is safe for concurrent use and pipelines calls over its
// one connection, so many programs share a single client per server. By
// default the pool instead leases each client to one caller at a time, as
// it does a net.Conn, and dials another when all of a server's clients are
// leased: that caps the connections, and the calls in flight, per server,
// and a broken connection fails only the call of the caller that holds it.
//
// With clientpool.WithShared(n) among the options of [NewCluster], up to n
// calls share a client at once, on the least-loaded client of the server;
// clientpool.WithMaxActive then caps the connections per server, and calls
// beyond n per connection wait for a share in arrival order. A client
// whose connection breaks (its [Client.Closed] channel closes) or whose
// call failed takes no new call, and the calls it was carrying are
// retried on the other clients, as idempotent calls of Do are.
package netrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"sync"
	"time"

	"github.com/seed73091bf1/connpool/clientpool"
)

// dialTimeout bounds each dial of [Dial]. The pool may run a dial in a
// goroutine of its own, without the cancellation of the caller that asked
// for it (see clientpool.New), so a dial needs a bound of its own.
const dialTimeout = 3 * time.Second

// Client is an *rpc.Client together with the connection it runs on, the
// value the pool of a [Cluster] keeps. A Client serves one call at a time
// when it is leased from the pool, but, like an *rpc.Client, it is safe
// for concurrent use.
type Client struct {
	rpc  *rpc.Client
	conn net.Conn
	dead chan struct{} // closed once a read from conn failed
}

// Dial connects to the net/rpc server at address over TCP, within ctx and
// at most 3 seconds, and returns a Client on the connection. It is the
// dial function of a Cluster's pool.
func Dial(ctx context.Context, address string) (*Client, error) {
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, err // a *net.OpError, which names the address
	}
	c := &Client{conn: conn, dead: make(chan struct{})}
	c.rpc = rpc.NewClient(&watchedConn{Conn: conn, dead: c.dead})
	return c, nil
}

// watchedConn is the connection as the *rpc.Client sees it: the first read
// that fails closes dead. The client's reader goroutine reads all the
// time, so a connection that breaks or that the server closes closes dead
// at once.
type watchedConn struct {
	net.Conn
	once sync.Once
	dead chan struct{}
}

func (w *watchedConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if err != nil {
		w.once.Do(func() { close(w.dead) })
	}
	return n, err
}

// Closed returns a channel that is closed once the client's connection
// broke or was closed: the client is dead. The pool takes a dead client
// out of rotation by it, which matters in shared mode
// (clientpool.WithShared), where a client in use takes new leases and its
// socket cannot be peeked at.
func (c *Client) Closed() <-chan struct{} { return c.dead }

// NetConn returns the connection the client runs on. The pool finds it by
// this method and checks the socket of an idle client before reusing it: a
// peer that closed or reset the connection means the client is dead, and
// the pool closes it and tries another or dials.
//
// The *rpc.Client reads from the connection in a goroutine of its own; the
// pool's check only peeks at the socket and reads nothing. The check relies
// on the connection staying open until the pool closes the client: net/rpc
// closes it only in Client.Close, never by itself when it breaks, so the
// socket the pool peeks at is still this client's. (A client library that
// closes its connection on its own should offer a Closed channel instead;
// see the clientpool documentation.)
func (c *Client) NetConn() net.Conn { return c.conn }

// Close closes the client and its connection; calls still pending fail
// with rpc.ErrShutdown. The pool calls it once, when it discards the
// client; a second Close returns rpc.ErrShutdown.
func (c *Client) Close() error { return c.rpc.Close() }

// Call calls serviceMethod with args and waits for its reply, or for ctx
// to end. Its errors are those of *rpc.Client.Call, made ready for
// clientpool's Do (see the package documentation):
//   - rpc.ErrShutdown, a client whose connection already broke, becomes an
//     error that wraps it and io.ErrUnexpectedEOF, a connection error;
//   - an rpc.ServerError, an error the service returned, is marked with
//     clientpool.Clean;
//   - ctx.Err() if ctx ends first. The call is then still pending on the
//     client, which may write reply later: the caller must not read reply,
//     and must release the client (Do does, for an error that is not
//     marked clean).
//
// Other errors, such as a reset or a broken pipe from sending the request,
// are returned unchanged.
func (c *Client) Call(ctx context.Context, serviceMethod string, args, reply any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	call := c.rpc.Go(serviceMethod, args, reply, make(chan *rpc.Call, 1))
	select {
	case <-call.Done:
		return classify(call.Error)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// classify maps the error of a finished call to the rules of clientpool's
// Do, as [Client.Call] describes.
func classify(err error) error {
	var serverErr rpc.ServerError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &serverErr):
		return clientpool.Clean(err)
	case errors.Is(err, rpc.ErrShutdown):
		// The client's reader saw its connection break, before or while
		// this call was sent. Nothing was answered; for Do this is a
		// connection error like the io.ErrUnexpectedEOF that net/rpc
		// gives the calls that were in flight at that moment.
		return fmt.Errorf("netrpc: %w: %w", err, io.ErrUnexpectedEOF)
	}
	return err
}
