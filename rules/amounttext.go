package rules

// ParseAmount reads s, a number in JSON's grammar ("1000000", "2500.50",
// "1e6"), exactly, and returns its plain decimal text ("1000000",
// "2500.5"), the form the rules give an amount in (Decision.Amount). It is
// false when s is not such a number, or is beyond the range amounts are
// read exactly in. The sign is kept: the caller decides whether a negative
// amount means anything.
func ParseAmount(s string) (string, bool) {
	d, ok := parseDecimal(s, false)
	if !ok {
		return "", false
	}
	return d.String(), true
}

// AmountCapText is the action's amount_cap as plain decimal text, "" when
// it has none.
func (a *Action) AmountCapText() string {
	if !a.hasCap {
		return ""
	}
	return a.cap.String()
}
