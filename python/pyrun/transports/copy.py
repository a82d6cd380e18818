"""The one copy algorithm: every transfer between transports (load, save, import, image copy,
and later pull/push) is `copy_image` over a source image and a destination."""

from __future__ import annotations

from collections.abc import Callable

from pyrun import oci
from pyrun.reference import Reference
from pyrun.transports.base import ImageDestination, LayerResult, SourceImage, SourceLayer

Progress = Callable[[str], None]

PARALLEL = 3  # layers fetched at once (moby's max-concurrent-downloads default)


def copy_image(
    image: SourceImage,
    dest: ImageDestination,
    names: list[Reference] | None = None,
    progress: Progress | None = None,
) -> str:
    """Copy one image; layers the destination already has are neither read nor written.
    Returns the manifest digest at the destination."""
    results: list[LayerResult | None] = []
    todo: list[tuple[int, SourceLayer]] = []
    for layer in image.layers:
        desc = layer.descriptor
        if desc is not None and dest.has_layer(desc, layer.diff_id):
            if progress:
                progress(f"{desc['digest'][7:19]}: already exists")
            results.append(
                LayerResult(
                    desc["digest"], layer.diff_id or desc["digest"], desc["size"], desc["mediaType"]
                )
            )
            continue
        todo.append((len(results), layer))
        results.append(None)

    begin = getattr(progress, "begin", None)  # a display with bars: byte counts per layer
    mounted: dict[str, str] = getattr(dest, "mounted", {})

    def put(layer: SourceLayer) -> LayerResult:
        if begin is not None and layer.descriptor is not None:
            begin(layer.descriptor["digest"][7:19], int(layer.descriptor["size"]), layer.blob)
        res = dest.put_layer(layer)
        if progress:
            if res.digest in mounted:
                progress(f"{res.digest[7:19]}: mounted from {mounted[res.digest]}")
            else:
                progress(f"{res.digest[7:19]}: copied {res.size} bytes")
        return res

    # Layers that stream from a registry download (and unpack, GIL released) in parallel, and
    # uploads to a registry go up in parallel, PARALLEL at a time like Docker's default; local
    # copies stay sequential.
    remote = [t for t in todo if hasattr(t[1].blob, "pipe")]
    if len(todo) > 1 and (remote or getattr(dest, "concurrent", False)):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="layer") as pool:
            futures = [(i, pool.submit(put, layer)) for i, layer in todo]
            for i, fut in futures:
                results[i] = fut.result()
    else:
        for i, layer in todo:
            results[i] = put(layer)
    done = [r for r in results if r is not None]
    if image.finalize is not None:
        manifest, config = image.finalize(done)
    else:
        assert image.manifest is not None and image.config is not None
        manifest, config = image.manifest, image.config
    mobj = oci.load_json(manifest, "manifest")
    cdesc = mobj.get("config", {})
    dest.put_blob(
        config,
        str(cdesc.get("digest") or oci.sha256_bytes(config)),
        str(cdesc.get("mediaType", oci.OCI_CONFIG)),
    )
    return dest.put_manifest(
        manifest, image.media_type, names if names is not None else image.names
    )
