"""Engine on a Ray cluster: each Ray actor supervises one `engine serve` process; queries go to the
Swift servers over HTTP, never through Ray's object store."""
