package balancer

// MaglevShares reports how many table slots each endpoint owns.
func MaglevShares(m *Maglev) map[string]int {
	t := m.table.Load()
	out := map[string]int{}
	for _, i := range t.slots {
		out[t.eps[i].address]++
	}
	return out
}
