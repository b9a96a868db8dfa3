package connpool_test

import (
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// The tests in this file run in a synctest bubble: time is virtual, so they
// check the cleaner's timing exactly without waiting for it.

func TestCleanerClosesExpiredIdleConnsWithinOneAndAQuarterTimeouts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 40 * time.Millisecond
		var d testnet.FakeDialer
		p, err := connpool.New(d.Dial, 8, timeout)
		require.NoError(t, err)
		defer p.Close()

		giveBack(t, checkout(t, p, "a:1", 3)...)

		time.Sleep(timeout * 9 / 10)
		synctest.Wait()
		assert.EqualValues(t, 3, d.Open(), "conns must not be closed before the timeout")
		assert.EqualValues(t, 3, p.Stats().Idle)

		time.Sleep(timeout*5/4 - timeout*9/10)
		synctest.Wait()
		assert.EqualValues(t, 0, d.Open(), "conns must be closed within 1.25 × timeout")
		s := p.Stats()
		assert.EqualValues(t, 0, s.Idle)
		assert.EqualValues(t, 0, s.Total)
		assert.EqualValues(t, 3, s.ClosedIdleTimeout)
	})
}

func TestCleanerKeepsConnsReturnedLater(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 100 * time.Millisecond
		var d testnet.FakeDialer
		p, err := connpool.New(d.Dial, 8, timeout)
		require.NoError(t, err)
		defer p.Close()

		conns := checkout(t, p, "a:1", 2)
		young := conns[1]
		giveBack(t, conns[0])

		// Keep the address busy so that its clock readings stay fresh.
		for range 6 {
			time.Sleep(timeout / 10)
			giveBack(t, checkout(t, p, "b:1", 1)...)
			c, err := p.New("a:1")
			require.NoError(t, err)
			require.NoError(t, c.(*connpool.Conn).Release())
		}
		require.NoError(t, young.Close())

		time.Sleep(timeout / 2)
		synctest.Wait()
		a := destination(p.Stats(), "a:1")
		assert.EqualValues(t, 1, a.Idle, "only the older conn may have expired")
		c, err := p.Get("a:1")
		require.NoError(t, err)
		assert.Equal(t, id(young), id(c))
		require.NoError(t, c.Close())
	})
}

// Regression: the predecessor kept a bucket for every address it had ever
// seen, so backends coming and going grew its memory without bound.
func TestEmptyAddressesAreForgotten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d testnet.FakeDialer
		p, err := connpool.New(d.Dial, 8, 0) // conns never expire
		require.NoError(t, err)
		defer p.Close()

		const churn = 1000
		for i := range churn {
			c, err := p.Get("10.0.0." + strconv.Itoa(i) + ":80")
			require.NoError(t, err)
			require.NoError(t, c.(*connpool.Conn).Release())
		}
		kept, err := p.Get("kept:80")
		require.NoError(t, err)
		inUse, err := p.Get("in-use:80")
		require.NoError(t, err)
		require.NoError(t, kept.Close())
		require.Len(t, p.Stats().Destinations, churn+2)

		time.Sleep(2 * time.Minute) // a few sweeps of a pool without timeout
		synctest.Wait()

		s := p.Stats()
		var addrs []string
		for _, d := range s.Destinations {
			addrs = append(addrs, d.Address)
		}
		assert.Equal(t, []string{"in-use:80", "kept:80"}, addrs, "only addresses with conns are kept")
		assert.EqualValues(t, churn+2, s.Dials, "pool-wide totals keep the counts of forgotten addresses")
		assert.EqualValues(t, churn, s.Released)

		// A forgotten address works like a new one.
		giveBack(t, checkout(t, p, "10.0.0.1:80", 1)...)
		assert.EqualValues(t, 1, destination(p.Stats(), "10.0.0.1:80").Idle)
		require.NoError(t, inUse.Close())
	})
}
