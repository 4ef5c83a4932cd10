package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// PlantedTag is the build tag that lets a noded binary take planted bugs
// from its environment (server/planted_nodedplanted.go).
const PlantedTag = "nodedplanted"

// BuildNoded builds cmd/noded into dir, with the planted-bug build tag if
// planted, and returns the binary's path. It runs inside the module.
func BuildNoded(dir string, planted bool) (string, error) {
	name := "noded"
	args := []string{"build", "-o"}
	if planted {
		name = "noded-" + PlantedTag
	}
	bin := filepath.Join(dir, name)
	args = append(args, bin)
	if planted {
		args = append(args, "-tags", PlantedTag)
	}
	args = append(args, "github.com/noded/noded/cmd/noded")
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go %v: %w", args, err)
	}
	return bin, nil
}
