package balancer

// MaglevShares reports how many table slots each endpoint owns.
func MaglevShares(m *Maglev) map[string]int {
	out := map[string]int{}
	v, _ := m.set.snap.Load().view.(*maglevView)
	if v == nil {
		return out
	}
	for _, ep := range v.owners {
		out[ep.address]++
	}
	return out
}
