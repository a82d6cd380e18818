"""Places an image can live, each a source and/or destination behind one interface, and the one
copy algorithm over any pair (see `copy.py`). Transport names follow skopeo's:
`oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:REF]`, `rootfs:FILE` and the
local store (a bare reference, or `pyrun:REF`)."""
