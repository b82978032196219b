package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postback/postback/config"
	"github.com/postback/postback/mapping"
)

// mountTmpfs mounts a small tmpfs (needs root and mount rights, as CI has);
// the test is skipped where the sandbox forbids mounts.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("SKIPPED: cannot mount a tmpfs here (%v %s): run as root with mount rights, as this project's CI does", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

func remount(t *testing.T, dir, opts string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,"+opts, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s: %v %s", opts, err, out)
	}
}

func readyStatus(t *testing.T, base string) int {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestDiskFullAndReadOnlyStore fills the store's file system, then makes it
// read-only: the gateway must answer 503 (so sources retry), never a 2xx for
// a notification it did not store, report not-ready, and recover once space
// or write access returns.
func TestDiskFullAndReadOnlyStore(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a tmpfs mount")
	}
	dir := mountTmpfs(t, "3m")
	rcv := newReceiver(t)
	cfg := e2eConfig(t, filepath.Join(dir, "postback.db"), rcv.srv.URL, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, Options{Logger: NewLogger(io.Discard, config.Log{Level: "error"}, nil), Listener: ln})
	if err != nil {
		t.Fatalf("open on tmpfs: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, nil) }()
	defer func() { cancel(); <-done }()
	base := "http://" + ln.Addr().String()
	waitFor(t, "ready", func() bool { return readyStatus(t, base) == 200 })

	pad := strings.Repeat("x", 60<<10) // 60 KiB of metadata per notification
	post := func(id string) int {
		body := bytes.Replace(stripeEvent(id), []byte(`"app_user_id":"user-`+id+`"`), []byte(fmt.Sprintf(`"app_user_id":"user-%s","pad":%q`, id, pad)), 1)
		return postStripe(t, base, body)
	}
	var acked, refused []string
	for i := 0; i < 200 && len(refused) < 3; i++ {
		id := fmt.Sprintf("evt_full_%03d", i)
		switch code := post(id); code {
		case 200:
			acked = append(acked, id)
		case http.StatusServiceUnavailable:
			refused = append(refused, id)
		default:
			t.Fatalf("%s: status %d, want 200 or 503", id, code)
		}
	}
	if len(refused) == 0 {
		t.Fatalf("the 3 MiB file system never filled after %d notifications", len(acked))
	}
	for _, id := range acked {
		if _, err := g.Store.Notification(mapping.SourceStripe, id); err != nil {
			t.Fatalf("acknowledged %s is not stored: %v", id, err)
		}
	}
	for _, id := range refused {
		if _, err := g.Store.Notification(mapping.SourceStripe, id); err == nil {
			t.Fatalf("%s was refused with 503 yet stored", id)
		}
	}

	t.Logf("disk full: %d notifications acknowledged and stored before the 3 MiB file system filled, %d answered 503 and not stored", len(acked), len(refused))

	// Space returns: the same notification the source retries is accepted.
	remount(t, dir, "size=64m")
	waitFor(t, "ready again", func() bool { return readyStatus(t, base) == 200 })
	if code := post(refused[0]); code != 200 {
		t.Fatalf("after space returned: status %d", code)
	}
	if _, err := g.Store.Notification(mapping.SourceStripe, refused[0]); err != nil {
		t.Fatalf("retried notification not stored: %v", err)
	}

	if err := g.Store.Check(); err != nil {
		t.Fatalf("bbolt check after the failures: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("stop: %v", err)
	}
	done <- nil

	// A read-only store: the gateway refuses to start with a clear error
	// instead of accepting notifications it cannot keep. (A file system that
	// turns read-only under a running gateway fails its commits exactly as
	// the full disk above does: 503.)
	remount(t, dir, "ro")
	defer remount(t, dir, "rw")
	if _, err := New(cfg, Options{Logger: NewLogger(io.Discard, config.Log{Level: "error"}, nil)}); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("start on a read-only store: err = %v, want a read-only error", err)
	}
}
