package connpool

import (
	"context"
	"io"
	"time"

	"github.com/seed73091bf1/connpool/internal/bridge"
)

// The clientpool package runs on this package's engine with values of any
// io.Closer; these are the unexported parts it needs.
func init() {
	bridge.DialOption = func(dial func(ctx context.Context, address string) (io.Closer, error)) any {
		return Option(func(o *options) { o.dialValue = dial })
	}
	bridge.ValidatorOption = func(fn func(io.Closer) error, minIdle time.Duration) any {
		return Option(func(o *options) {
			o.validator = fn
			o.validateAge = minIdle
		})
	}
	bridge.Value = func(c any) io.Closer {
		pc := c.(*Conn).load()
		if pc == nil {
			return nil
		}
		return pc.v
	}
	bridge.MarkSent = func(c any) { c.(*Conn).mark(sentBit) }
	bridge.SharedOption = func(n int) any { return Option(func(o *options) { o.shares, o.sharesSet = n, true }) }
	bridge.ReleaseNow = func(c any) error { return c.(*Conn).release(true) }
	bridge.Shared = func(p any) bool { return p.(*Pool).shares > 0 }
}
