package forwarders

import "flag"

// update rewrites the golden files under testdata/ instead of comparing
// against them: go test ./forwarders -run Golden -update. Declared once for
// the whole package; every forwarder's golden test uses it.
var update = flag.Bool("update", false, "rewrite golden files in testdata/")
