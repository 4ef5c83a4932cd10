//go:build nodedplanted

package server

import (
	"fmt"
	"os"

	"github.com/noded/noded/node"
)

// PlantedBugsEnv names the environment variable a binary built with
// -tags nodedplanted reads its planted bugs from: a comma-separated list of
// node.PlantedBugNames. cmd/internal/chaos sets it to run its campaign
// against a member with a known bug and show the checkers catch it. A
// normal build has neither the variable nor the bugs.
const PlantedBugsEnv = "NODED_PLANTED_BUGS"

var plantedBugs = mustPlantedBugs()

func mustPlantedBugs() node.PlantedBugs {
	bugs, err := node.ParsePlantedBugs(os.Getenv(PlantedBugsEnv))
	if err != nil {
		panic(fmt.Sprintf("%s: %v", PlantedBugsEnv, err))
	}
	if bugs.Any() {
		fmt.Fprintf(os.Stderr, "noded: built with nodedplanted, running with planted bugs: %s\n", bugs)
	}
	return bugs
}
