package store

// SetErasureChunk makes erasure steps examine n records (tests: n = 1
// makes every record its own step, so a resume cursor must continue
// exactly); it returns the restore.
func SetErasureChunk(n int) (restore func()) {
	old := erasureChunk
	erasureChunk = n
	return func() { erasureChunk = old }
}
