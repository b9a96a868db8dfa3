package testnet

import (
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// FakeDialer makes FakeConns and counts them. It needs no socket, so it
// measures the pool alone.
type FakeDialer struct {
	// OnClose, if set before the first Dial, runs at the first Close of
	// every conn.
	OnClose func(*FakeConn)

	dials  atomic.Int64
	open   atomic.Int64
	nextID atomic.Int64

	mu    sync.Mutex // protects conns
	conns []*FakeConn
}

// Dial returns a new FakeConn for address.
func (d *FakeDialer) Dial(address string) (net.Conn, error) {
	c := &FakeConn{ID: d.nextID.Add(1), Address: address, d: d}
	d.dials.Add(1)
	d.open.Add(1)
	d.mu.Lock()
	d.conns = append(d.conns, c)
	d.mu.Unlock()
	return c, nil
}

// Dials returns how many conns were dialed.
func (d *FakeDialer) Dials() int64 { return d.dials.Load() }

// Open returns how many dialed conns have not been closed.
func (d *FakeDialer) Open() int64 { return d.open.Load() }

// Conns returns every conn dialed so far, in dial order.
func (d *FakeDialer) Conns() []*FakeConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*FakeConn(nil), d.conns...)
}

// FakeConn is a net.Conn that does no I/O. It counts the calls made on it;
// Read fills the buffer with nothing and reports len(p) bytes.
type FakeConn struct {
	ID      int64
	Address string

	d *FakeDialer

	Reads     atomic.Int64
	Writes    atomic.Int64
	Deadlines atomic.Int64
	Closes    atomic.Int64
}

var errFakeClosed = errors.New("testnet: fake conn closed")

func (c *FakeConn) Read(p []byte) (int, error) {
	c.Reads.Add(1)
	if c.Closes.Load() > 0 {
		return 0, errFakeClosed
	}
	return len(p), nil
}

func (c *FakeConn) Write(p []byte) (int, error) {
	c.Writes.Add(1)
	if c.Closes.Load() > 0 {
		return 0, errFakeClosed
	}
	return len(p), nil
}

// Close counts the call. Only the first call changes the dialer's open count.
func (c *FakeConn) Close() error {
	if c.Closes.Add(1) != 1 {
		return errFakeClosed
	}
	if c.d != nil {
		if c.d.OnClose != nil {
			c.d.OnClose(c)
		}
		c.d.open.Add(-1)
	}
	return nil
}

// LocalAddr names the conn uniquely: "fake-<ID>".
func (c *FakeConn) LocalAddr() net.Addr  { return fakeAddr("fake-" + strconv.FormatInt(c.ID, 10)) }
func (c *FakeConn) RemoteAddr() net.Addr { return fakeAddr(c.Address) }

func (c *FakeConn) SetDeadline(time.Time) error      { c.Deadlines.Add(1); return nil }
func (c *FakeConn) SetReadDeadline(time.Time) error  { c.Deadlines.Add(1); return nil }
func (c *FakeConn) SetWriteDeadline(time.Time) error { c.Deadlines.Add(1); return nil }

type fakeAddr string

func (a fakeAddr) Network() string { return "fake" }
func (a fakeAddr) String() string  { return string(a) }
