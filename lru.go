package connpool

import "sync"

// lruNode stands for one idle conn in the pool-wide idle list kept when
// WithMaxIdle is set.
type lruNode struct {
	prev, next *lruNode
	b          *bucket // the bucket whose idle stack holds the conn

	// evicted is set when the node is taken off the list to make room.
	// The conn stays in its bucket's stack until the evicting goroutine,
	// a Get or the cleaner removes it under the bucket's lock; whoever does
	// closes it.
	evicted bool
}

// idleLRU orders the idle conns of all addresses by the time they were
// returned, so the pool can evict the least recently used one in O(1) when
// its idle cap is full. The globally oldest idle conn is always at the
// bottom of its own bucket's stack.
//
// Lock order: bucket.mu before idleLRU.mu. Eviction from another bucket
// happens after the evicting bucket's lock is released.
type idleLRU struct {
	max int // cap on linked nodes; >= 1

	mu         sync.Mutex // protects the fields below and every node's links and evicted flag
	head, tail *lruNode   // head is the least recently returned
	n          int

	// wanted counts the checkouts waiting at the WithMaxTotal cap that
	// found no idle conn to evict: the next conns returned are evicted
	// for them. Invariant: wanted <= the checkouts waiting at the cap,
	// once each that stops waiting has called capWanted.
	wanted int
}

// add links node as the most recently returned idle conn. If that puts the
// list over its cap, or a checkout waiting at the WithMaxTotal cap wants
// an idle conn closed, it unlinks the least recently returned node, marks it
// evicted and returns it; the caller removes its conn from its bucket.
func (l *idleLRU) add(node *lruNode) (victim *lruNode) {
	l.mu.Lock()
	defer l.mu.Unlock()
	node.prev, node.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = node
	} else {
		l.head = node
	}
	l.tail = node
	l.n++
	if l.n <= l.max && l.wanted == 0 {
		return nil
	}
	if l.n <= l.max {
		l.wanted--
	}
	victim = l.head
	l.unlinkLocked(victim)
	victim.evicted = true
	return victim
}

// remove unlinks node because its conn leaves the idle stack. It reports
// whether the node had been evicted already, in which case the conn must be
// closed rather than used.
func (l *idleLRU) remove(node *lruNode) (evicted bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if node.evicted {
		return true
	}
	l.unlinkLocked(node)
	return false
}

// evictForWaiter serves a checkout that waits at the WithMaxTotal cap: it
// evicts the least recently returned idle conn and returns it for the
// caller to remove from its bucket, or, with none idle, records that the
// next one returned is to be evicted.
func (l *idleLRU) evictForWaiter() (victim *lruNode) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.head == nil {
		l.wanted++
		return nil
	}
	victim = l.head
	l.unlinkLocked(victim)
	victim.evicted = true
	return victim
}

// capWanted bounds the evictions wanted by evictForWaiter to n, the
// checkouts still waiting, when one stops waiting.
func (l *idleLRU) capWanted(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.wanted = min(l.wanted, n)
}

// len returns the number of linked nodes.
func (l *idleLRU) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// isEvicted reports whether node was evicted.
func (l *idleLRU) isEvicted(node *lruNode) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return node.evicted
}

func (l *idleLRU) unlinkLocked(node *lruNode) {
	if node.prev != nil {
		node.prev.next = node.next
	} else {
		l.head = node.next
	}
	if node.next != nil {
		node.next.prev = node.prev
	} else {
		l.tail = node.prev
	}
	node.prev, node.next = nil, nil
	l.n--
}
