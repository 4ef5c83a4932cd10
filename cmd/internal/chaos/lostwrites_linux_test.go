package chaos

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func requireMounts(t *testing.T) {
	t.Helper()
	_, fuseErr := canMount(t.TempDir())
	if fuseErr != nil {
		t.Skipf("the lost-writes layer cannot be mounted here: %v", fuseErr)
	}
}

// The layer keeps writes until fsync: reads see them, loseUnsynced drops
// them, and what was fsynced survives.
func TestLazyFSLosesOnlyUnsyncedWrites(t *testing.T) {
	requireMounts(t)
	dir := t.TempDir()
	l, err := mountLazyFS(filepath.Join(dir, "back"), filepath.Join(dir, "mnt"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.unmount()
	synced := filepath.Join(dir, "mnt", "synced")
	unsynced := filepath.Join(dir, "mnt", "unsynced")
	f, err := os.Create(synced)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("durable")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("DUR"), 0); err != nil { // overwrite, never synced
		t.Fatal(err)
	}
	f.Close()
	if err := os.WriteFile(unsynced, []byte("gone after a power loss"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(unsynced); string(b) != "gone after a power loss" {
		t.Fatalf("cached write not readable: %q", b)
	}
	if b, _ := os.ReadFile(synced); string(b) != "DURable" {
		t.Fatalf("cached overwrite not readable: %q", b)
	}
	l.powerCut()
	if err := os.WriteFile(filepath.Join(dir, "mnt", "after"), []byte("x"), 0o644); err == nil {
		t.Fatal("a write after the power cut succeeded")
	}
	files, lost := l.loseUnsynced()
	if files != 2 || lost != int64(len("gone after a power loss")+3) {
		t.Fatalf("lost %d bytes in %d files", lost, files)
	}
	if b, _ := os.ReadFile(unsynced); len(b) != 0 {
		t.Fatalf("unsynced file still holds %q", b)
	}
	if b, _ := os.ReadFile(synced); !bytes.Equal(b, []byte("durable")) {
		t.Fatalf("synced file holds %q after the loss", b)
	}
}
