package desk

// Grouped is grouped, for the tests.
var Grouped = grouped

// Outstanding is how many challenges the desk holds in memory.
func Outstanding(d *Desk) int {
	m, ok := d.cfg.Sessions.(*MemorySessions)
	if !ok {
		return -1
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.used)
	for _, s := range m.sessions {
		n += len(s.challenges)
	}
	return n
}
