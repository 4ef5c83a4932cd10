//go:build !unix

package server

// fileLimit is unknown here: connmux takes its default.
func fileLimit() uint64 { return 0 }
