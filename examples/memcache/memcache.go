// Package memcache is a minimal memcached text-protocol client (get, set,
// delete) that shards keys across servers with Maglev consistent hashing
// and pools connections per server with connpool. It shows the job client
// libraries such as gomemcache do with per-address free lists of their own.
package memcache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
)

// ErrServer is wrapped by errors the server reports (ERROR, SERVER_ERROR,
// CLIENT_ERROR) and by replies the client cannot parse.
var ErrServer = errors.New("memcache: server error")

// Client talks to a set of memcached servers.
type Client struct {
	pool *connpool.Pool
	ring *balancer.Maglev
	bp   *balancer.Pool
}

// New returns a client for servers (host:port each).
func New(servers []string) (*Client, error) {
	dial := func(ctx context.Context, address string) (net.Conn, error) {
		d := net.Dialer{Timeout: time.Second}
		return d.DialContext(ctx, "tcp", address)
	}
	pool, err := connpool.New(nil, 8, time.Minute, connpool.WithDialContext(dial))
	if err != nil {
		return nil, err
	}
	c := &Client{pool: pool, ring: balancer.NewMaglev(nil, balancer.WithEjection(2, time.Second, 10*time.Second))}
	c.bp = balancer.NewPool(pool, c.ring)
	c.SetServers(servers)
	return c, nil
}

// SetServers replaces the servers; keys move only from removed servers.
func (c *Client) SetServers(servers []string) {
	eps := make([]balancer.Endpoint, len(servers))
	for i, s := range servers {
		eps[i] = balancer.Endpoint{Address: s}
	}
	c.bp.Update(eps)
}

// Close closes every pooled connection.
func (c *Client) Close() error { return c.pool.Close() }

// Stats returns the connection pool's stats.
func (c *Client) Stats() connpool.Stats { return c.pool.Stats() }

// Server returns the server key maps to now.
func (c *Client) Server(key string) (string, error) {
	addr, done, err := c.ring.Pick(balancer.WithKey(context.Background(), key))
	if err != nil {
		return "", err
	}
	done(balancer.ErrPickNotUsed)
	return addr, nil
}

// Set stores value under key.
func (c *Client) Set(ctx context.Context, key string, value []byte) error {
	return c.do(ctx, key, func(rw *bufio.ReadWriter) error {
		// A bufio.Writer keeps its first error; Flush reports it.
		_, _ = fmt.Fprintf(rw, "set %s 0 0 %d\r\n", key, len(value))
		_, _ = rw.Write(value)
		_, _ = rw.WriteString("\r\n")
		if err := rw.Flush(); err != nil {
			return err
		}
		return expect(rw.Reader, "STORED")
	})
}

// Get returns the value of key, and false if there is none.
func (c *Client) Get(ctx context.Context, key string) (value []byte, found bool, err error) {
	err = c.do(ctx, key, func(rw *bufio.ReadWriter) error {
		_, _ = fmt.Fprintf(rw, "get %s\r\n", key) // Flush reports a write error
		if err := rw.Flush(); err != nil {
			return err
		}
		line, err := readLine(rw.Reader)
		if err != nil {
			return err
		}
		if line == "END" {
			return nil
		}
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "VALUE" || f[1] != key {
			return fmt.Errorf("%w: unexpected reply %q", ErrServer, line)
		}
		n, err := strconv.Atoi(f[3])
		if err != nil {
			return fmt.Errorf("%w: bad length in %q", ErrServer, line)
		}
		value = make([]byte, n+2)
		if _, err := io.ReadFull(rw, value); err != nil {
			return err
		}
		value, found = value[:n], true
		return expect(rw.Reader, "END")
	})
	return value, found, err
}

// Delete removes key, and reports whether it existed.
func (c *Client) Delete(ctx context.Context, key string) (deleted bool, err error) {
	err = c.do(ctx, key, func(rw *bufio.ReadWriter) error {
		_, _ = fmt.Fprintf(rw, "delete %s\r\n", key) // Flush reports a write error
		if err := rw.Flush(); err != nil {
			return err
		}
		line, err := readLine(rw.Reader)
		switch {
		case err != nil:
			return err
		case line == "DELETED":
			deleted = true
		case line != "NOT_FOUND":
			return fmt.Errorf("%w: %s", ErrServer, line)
		}
		return nil
	})
	return deleted, err
}

// do runs one request on a conn to the server of key. A conn that saw an I/O
// error is released; a conn that saw a clean reply, even an error reply, goes
// back to the pool.
func (c *Client) do(ctx context.Context, key string, req func(*bufio.ReadWriter) error) error {
	if key == "" || len(key) > 250 || strings.ContainsAny(key, " \r\n") {
		return fmt.Errorf("memcache: invalid key %q", key)
	}
	conn, err := c.bp.Get(balancer.WithKey(ctx, key))
	if err != nil {
		return err
	}
	bc := conn.(*balancer.Conn)
	if d, ok := ctx.Deadline(); ok {
		if err := bc.SetDeadline(d); err != nil {
			_ = bc.Release() // the request's error is the one to report
			return err
		}
	}
	rw := bufio.NewReadWriter(bufio.NewReader(bc), bufio.NewWriter(bc))
	err = req(rw)
	if err != nil && !errors.Is(err, ErrServer) || rw.Reader.Buffered() > 0 {
		_ = bc.Release() // the request's error is the one to report
		return err
	}
	if derr := bc.SetDeadline(time.Time{}); derr != nil {
		_ = bc.Release()
		return err
	}
	_ = bc.Close() // the request is done; a close error cannot change its outcome
	return err
}

func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(line, "\r\n"), nil
}

func expect(r *bufio.Reader, want string) error {
	line, err := readLine(r)
	if err != nil {
		return err
	}
	if line != want {
		return fmt.Errorf("%w: %s", ErrServer, line)
	}
	return nil
}
