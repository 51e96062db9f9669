package desk

// Grouped is grouped, for the tests.
var Grouped = grouped

// Outstanding is how many challenges the desk holds.
func Outstanding(d *Desk) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := len(d.signin.used)
	for _, s := range d.sessions {
		n += len(s.challenges)
	}
	return n
}
