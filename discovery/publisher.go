package discovery

import (
	"slices"
	"strings"
	"sync/atomic"

	"github.com/seed73091bf1/connpool/balancer"
)

// Publisher passes sets of endpoints to an Updater by the rules of this
// package: only a set that differs from the last one passed, compared
// sorted by address, and never an empty one. Every watcher of this package
// and of discovery/etcd publishes through one; a watcher of another
// registry can too. Publish must not be called concurrently; the counts
// may be read at any time.
type Publisher struct {
	u       Updater
	last    []balancer.Endpoint
	updates atomic.Int64
	count   atomic.Int32
}

// NewPublisher returns a Publisher that updates u.
func NewPublisher(u Updater) *Publisher { return &Publisher{u: u} }

// Publish sorts eps by address and passes a copy to the Updater if the set
// changed. An empty eps is not passed on: Publish returns [ErrNoEndpoints]
// and the last set stays.
func (p *Publisher) Publish(eps []balancer.Endpoint) error {
	if len(eps) == 0 {
		return ErrNoEndpoints
	}
	slices.SortFunc(eps, func(a, b balancer.Endpoint) int { return strings.Compare(a.Address, b.Address) })
	if slices.Equal(eps, p.last) {
		return nil
	}
	p.last = eps
	p.count.Store(int32(len(eps)))
	p.updates.Add(1)
	p.u.Update(slices.Clone(eps))
	return nil
}

// Updates returns how many sets were passed on.
func (p *Publisher) Updates() int64 { return p.updates.Load() }

// Len returns the size of the last set passed on.
func (p *Publisher) Len() int { return int(p.count.Load()) }
