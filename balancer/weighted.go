package balancer

import (
	"context"
	"math"
	"math/bits"
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// WeightedRoundRobin picks endpoints in proportion to their weights, in a
// smooth order: an endpoint of weight 5 among weights 5, 1, 1 comes up as
// a b a a a c a, never more than three times in a row. The order is
// earliest deadline first (EDF), as grpc-go's weighted schedulers use: the
// k-th pick of an endpoint of weight w is due at (k + φ) / w of a cycle,
// where φ in (0, 1] is a phase of its own, so over every cycle of
// sum(weights) picks each endpoint gets exactly its weight.
//
// An Update is O(n) in time and memory, whatever the weights (1,000
// endpoints with weights up to 65,535 rebuild in under a millisecond). A
// cycle of at most 4,096 picks, after dividing the weights by their
// greatest common divisor, is precomputed, so a pick is an atomic increment
// and an index. Longer cycles are produced 4,096 picks at a time from the
// EDF queue, under a lock taken once per 4,096 picks. Weights still above
// 2³⁰ after the division are scaled down in proportion, to 30 bits. Ejected
// endpoints are left out of the schedule, so their share is spread over
// the others in proportion to their weights.
type WeightedRoundRobin struct {
	set *endpointSet
}

// chunkSize is how many picks of the schedule are made at a time.
const chunkSize = 4096

// NewWeightedRoundRobin returns a smooth weighted round-robin balancer. The
// schedule starts at a random position, and again after every Update and
// every ejection or re-admission.
func NewWeightedRoundRobin(endpoints []Endpoint, opts ...Option) *WeightedRoundRobin {
	w := &WeightedRoundRobin{set: newEndpointSet(opts)}
	w.set.derive = deriveWeighted
	w.Update(endpoints)
	return w
}

// Pick returns the next endpoint of the schedule. It allocates nothing, and
// takes no lock but once every 4,096 picks of a long cycle.
func (w *WeightedRoundRobin) Pick(context.Context) (string, func(error), error) {
	snap := w.set.snap.Load()
	s, _ := snap.view.(*schedule)
	if s == nil {
		return "", noDone, ErrNoEndpoints
	}
	if snap.rampUntil != 0 {
		return w.set.pickRamping(snap, s.choose).pick()
	}
	return s.choose(nil, nil).pick()
}

// choose returns the next endpoint of the schedule, which moves on with
// every call. Its first argument, the snapshot's healthy endpoints, is
// s.eps already.
func (s *schedule) choose([]*endpoint, *endpoint) *endpoint {
	return s.eps[s.at(s.next.Add(1)-1)]
}

// Update replaces the endpoints and rebuilds the schedule.
func (w *WeightedRoundRobin) Update(endpoints []Endpoint) { w.set.update(endpoints) }

// States reports each endpoint's state.
func (w *WeightedRoundRobin) States() []State { return w.set.states() }

// schedule is the order of picks over one snapshot's healthy endpoints.
type schedule struct {
	eps  []*endpoint
	_    [56]byte      // next on a cache line of its own: every pick writes it
	next atomic.Uint64 // position of the next pick
	_    [56]byte

	cycle []uint32 // the whole cycle, if it is short; else nil

	mu    sync.Mutex // protects queue; taken to make the next chunk
	queue edfQueue
	chunk atomic.Pointer[scheduleChunk]
}

// scheduleChunk is picks start, start+1, … of a long cycle, with the
// chunk before it, for picks overtaken at the boundary by later ones.
type scheduleChunk struct {
	start     uint64
	order     []uint32
	prevOrder []uint32 // picks start-len(prevOrder) … start-1
}

// lookup returns pick i if c or the chunk before it holds it.
func (c *scheduleChunk) lookup(i uint64) (uint32, bool) {
	if d := i - c.start; d < uint64(len(c.order)) {
		return c.order[d], true
	}
	if back := c.start - i; back-1 < uint64(len(c.prevOrder)) { // 1 ≤ back ≤ len
		return c.prevOrder[uint64(len(c.prevOrder))-back], true
	}
	return 0, false
}

func deriveWeighted(_, next *snapshot) {
	if len(next.healthy) == 0 {
		return
	}
	s := &schedule{eps: next.healthy}
	weights := make([]uint64, len(s.eps))
	var g, heaviest, total uint64
	for i, ep := range s.eps {
		weights[i] = uint64(ep.weight.Load()) // once: a concurrent Update may change it
		g = gcd(g, weights[i])
	}
	for i := range weights {
		weights[i] /= g
		heaviest = max(heaviest, weights[i])
	}
	for i := range weights {
		if heaviest > maxWeight {
			weights[i] = max(uint64(float64(weights[i])*maxWeight/float64(heaviest)), 1)
		}
		total += weights[i]
	}
	if total <= chunkSize {
		q := newEDFQueue(weights, 0)
		s.cycle = q.take(make([]uint32, total))
		s.next.Store(rand.Uint64())
	} else {
		s.queue = newEDFQueue(weights, rand.Float64())
		s.chunk.Store(&scheduleChunk{order: s.queue.take(make([]uint32, chunkSize))})
	}
	next.view = s
}

// at returns the index into eps of pick number i.
func (s *schedule) at(i uint64) uint32 {
	if s.cycle != nil {
		return s.cycle[i%uint64(len(s.cycle))]
	}
	if e, ok := s.chunk.Load().lookup(i); ok {
		return e
	}
	return s.advance(i)
}

// advance makes chunks until one holds pick i, and returns it. A pick more
// than a whole chunk behind (its goroutine was descheduled while others
// made 4,096 picks) takes the same position in the current chunk.
func (s *schedule) advance(i uint64) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.chunk.Load()
	for int64(i-c.start) >= int64(len(c.order)) {
		c = &scheduleChunk{
			start:     c.start + uint64(len(c.order)),
			order:     s.queue.take(make([]uint32, chunkSize)),
			prevOrder: c.order,
		}
		s.chunk.Store(c)
	}
	if e, ok := c.lookup(i); ok {
		return e
	}
	return c.order[i%uint64(len(c.order))]
}

// edfQueue orders endpoints by the deadline of their next pick: the k-th
// (from 0) pick of endpoint i, of weight w, is due at (k + φᵢ) / w of a
// cycle, ties going to the lower index. The phase φᵢ in (0, 1] differs
// between endpoints (a golden-ratio sequence), so that light endpoints are
// not all due at the same moment, which would bunch the heavy one's picks
// together. Any phase gives each endpoint exactly w deadlines per cycle.
// It is a binary heap of indexes.
type edfQueue struct {
	weights []uint64
	phases  []uint64 // φᵢ in units of 2⁻³², in [1, 2³²]
	picks   []uint64 // k of each endpoint
	heap    []uint32
	total   uint64 // sum of weights: the cycle's length
	done    uint64 // picks taken in the current cycle
}

// maxWeight bounds weights so that deadlines cannot overflow.
const maxWeight = 1 << 30

// newEDFQueue starts a queue at the given fraction of a cycle, so that
// clients do not all start with the same endpoint.
func newEDFQueue(weights []uint64, at float64) edfQueue {
	n := len(weights)
	q := edfQueue{weights: weights, phases: make([]uint64, n), picks: make([]uint64, n), heap: make([]uint32, n)}
	for i, w := range weights {
		_, frac := math.Modf(float64(i+1) * 0.6180339887498949)
		q.phases[i] = uint64(frac*(1<<32)) + 1
		// Picks due by at: k + φ ≤ at·w.
		if due := at*float64(w) - float64(q.phases[i])/(1<<32); due >= 0 {
			q.picks[i] = uint64(due) + 1
		}
		q.total += w
		q.heap[i] = uint32(i)
	}
	for i := n/2 - 1; i >= 0; i-- {
		q.down(i)
	}
	return q
}

// before reports whether a's next pick is due before b's:
// (kₐ + φₐ) / wₐ < (k_b + φ_b) / w_b, in 128-bit integers.
func (q *edfQueue) before(a, b uint32) bool {
	ha, la := bits.Mul64(q.picks[a]<<32+q.phases[a], q.weights[b])
	hb, lb := bits.Mul64(q.picks[b]<<32+q.phases[b], q.weights[a])
	if ha != hb {
		return ha < hb
	}
	return la < lb || la == lb && a < b
}

// take fills out with the next picks and returns it.
func (q *edfQueue) take(out []uint32) []uint32 {
	for n := range out {
		top := q.heap[0]
		out[n] = top
		q.picks[top]++
		q.down(0)
		if q.done++; q.done == q.total {
			// A whole cycle: every endpoint got its weight. Taking the
			// weights off keeps the counts small and the order the same.
			for i, w := range q.weights {
				q.picks[i] -= w
			}
			q.done = 0
		}
	}
	return out
}

func (q *edfQueue) down(i int) {
	h := q.heap
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && q.before(h[r], h[l]) {
			m = r
		}
		if !q.before(h[m], h[i]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
