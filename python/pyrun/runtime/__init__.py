"""Containers: OCI runtime-spec generation from images (Docker's defaults), container records in
the store, and the foreground run over the Rust runtime (`pyrun._core.run_container`)."""
