package dispatch

import (
	"slices"
)

// ReloadResult says what a reload changed: Applied destinations run with
// their new configuration (endpoint, credentials, event names, retry
// limits); Added and Removed ones, and those whose Concurrency or rate
// limit changed (Restart), take effect only after a restart.
type ReloadResult struct {
	Applied []string `json:"applied"`
	Added   []string `json:"added,omitempty"`
	Removed []string `json:"removed,omitempty"`
	Restart []string `json:"restart_needed,omitempty"`
}

// Reload hands each running destination its new configuration (a new
// forwarder built from the reloaded file, with its new secrets). A worker
// applies it before its next pass, once the sends in flight have finished,
// so no request is cut and no send mixes old and new settings.
func (d *Dispatcher) Reload(dests []Destination) ReloadResult {
	var r ReloadResult
	seen := map[string]bool{}
	for _, dest := range dests {
		seen[dest.Name] = true
		w, ok := d.workers[dest.Name]
		if !ok {
			r.Added = append(r.Added, dest.Name)
			continue
		}
		dest = prepare(dest)
		w.mu.Lock()
		old := w.dest
		w.mu.Unlock()
		if dest.Concurrency != old.Concurrency || dest.PerSecond != old.PerSecond || dest.Burst != old.Burst {
			r.Restart = append(r.Restart, dest.Name)
			dest.Concurrency, dest.PerSecond, dest.Burst = old.Concurrency, old.PerSecond, old.Burst
		}
		w.reload.Store(&dest)
		w.nudge()
		r.Applied = append(r.Applied, dest.Name)
	}
	for _, name := range d.order {
		if !seen[name] {
			r.Removed = append(r.Removed, name)
		}
	}
	slices.Sort(r.Added)
	return r
}

// applyReload installs a reloaded configuration; it runs on the worker's
// loop, which alone starts sends, after the sends in flight are done.
func (w *worker) applyReload() {
	dest := w.reload.Swap(nil)
	if dest == nil {
		return
	}
	w.inflight.Wait()
	w.mu.Lock()
	w.dest = *dest
	w.mu.Unlock()
	w.d.opts.Logger.Info("destination configuration reloaded", "destination", dest.Name)
}
