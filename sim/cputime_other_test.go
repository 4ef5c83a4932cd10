//go:build !unix

package sim

// processCPUNs is unknown here; the benchmark then reports wall time only.
func processCPUNs() int64 { return 0 }
