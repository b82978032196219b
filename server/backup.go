package server

import (
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/postback/postback/webhooks"
)

// backuper is a store that can write a hot copy of itself (BoltDB).
type backuper interface {
	Backup(w io.Writer) (int64, error)
}

// mountStore registers the store's operator endpoints: a hot backup
// (BoltDB) and a consistency check.
func (a *admin) mountStore(api *echo.Group) {
	api.GET("/store/backup", a.backup)
	api.POST("/store/check", a.checkStore)
}

// backup streams a consistent copy of the BoltDB file, taken in one read
// transaction while the gateway keeps serving.
func (a *admin) backup(c echo.Context) error {
	b, ok := a.g.Store.(backuper)
	if !ok {
		return webhooks.Errorf(http.StatusConflict, "not_supported",
			"%s: back PostgreSQL up with its own tools (pg_dump, or your provider's snapshots and point-in-time recovery)", a.g.Store.Describe())
	}
	w := c.Response()
	w.Header().Set(echo.HeaderContentType, "application/octet-stream")
	w.Header().Set(echo.HeaderContentDisposition, fmt.Sprintf(`attachment; filename="postback-%s.db"`, a.g.now().UTC().Format("20060102T150405Z")))
	w.WriteHeader(http.StatusOK)
	n, err := b.Backup(w)
	if err != nil {
		// The status is sent: the client sees a short body and the log
		// says why.
		a.g.Logger.Error("backup failed", "err", err, "bytes", n)
		return nil
	}
	a.g.Logger.Info("backup written", "bytes", n)
	return nil
}

// checkStore runs the store's consistency check.
func (a *admin) checkStore(c echo.Context) error {
	start := time.Now()
	if err := a.g.Store.Check(); err != nil {
		return c.JSON(http.StatusOK, map[string]any{"ok": false, "store": a.g.Store.Describe(), "error": err.Error(), "took_ms": time.Since(start).Milliseconds()})
	}
	return c.JSON(http.StatusOK, map[string]any{"ok": true, "store": a.g.Store.Describe(), "took_ms": time.Since(start).Milliseconds()})
}
