//go:build !nodedplanted

package server

import "github.com/noded/noded/node"

// plantedBugs is always empty in a normal build: production never runs a
// planted bug. A binary built with -tags nodedplanted reads them from the
// environment instead (planted_nodedplanted.go), for the real-process
// campaigns' proof that their checkers catch each one.
var plantedBugs node.PlantedBugs
