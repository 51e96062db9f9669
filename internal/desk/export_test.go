package desk

// Grouped is grouped, for the tests.
var Grouped = grouped
