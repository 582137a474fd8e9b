"""The weights store: a registry of every file fsvideo can use, and a verified local cache.

* :mod:`.registry`  entries: file names, sources, checksums, licences, loader names;
* :mod:`.store`     the cache folder, manifest, checksums, and :func:`resolve` ("registry name or
  file path -> Path"), the one resolver every component uses;
* :mod:`.fetch`     HTTP with resume, Google Drive's confirmation, archives, installed packages;
* :mod:`.manage`    ``fsvideo weights import / verify / list``.

Network loaders and converters live beside the networks (:mod:`fsvideo.models.loading`,
:mod:`fsvideo.models.checkpoints`); no network module imports this package.  Every checkpoint is
read by :func:`fsvideo.models.loading.read_checkpoint` (``torch.load(weights_only=True)``), by
``np.load(allow_pickle=False)``, or by the numpy-only unpickler of :mod:`fsvideo.models.lpips_net`:
loading never executes code.

Public API::

    REGISTRY                      name -> WeightsEntry
    weights_home()                the cache folder
    resolve(ref)                  registry name or file path -> Path (downloads only when asked)
    first_run_downloads(...)      a block in which resolve() fetches missing weights (the CLI's)
    path_of(name) / require(name) the cached file, or None / a WeightsError naming the command
    download(name, progress=cb)   fetch (resume, sha256, atomic rename)
    import_file(name, file)       adopt a file the user got elsewhere (converted if needed, test-loaded)
    verify(names)                 re-hash and test-load cached files
    known_sha256(path)            a file's sha256, from the manifest / digest cache when they know it
    entries_status()              what `fsvideo weights list` shows
"""
from __future__ import annotations

from fsvideo.weights.digests import known_sha256
from fsvideo.weights.fetch import GDRIVE_URL, MIRROR_ENV, download
from fsvideo.weights.manage import EntryStatus, ImportResult, VerifyResult, entries_status, import_file, verify
from fsvideo.weights.registry import (
    FAN_2D_URL,
    FAN_S3FD_URL,
    REGISTRY,
    Source,
    WeightsEntry,
    entry,
    replace_sources,
)
from fsvideo.weights.store import (
    first_run_downloads,
    human_size,
    is_path_ref,
    known_checksum,
    manifest_record,
    offline,
    path_of,
    require,
    require_all,
    resolve,
    sha256_file,
    size_text,
    test_load,
    weights_home,
)

__all__ = ["FAN_2D_URL", "FAN_S3FD_URL", "GDRIVE_URL", "MIRROR_ENV", "REGISTRY", "EntryStatus", "ImportResult",
           "Source", "VerifyResult", "WeightsEntry", "download", "entries_status", "entry",
           "first_run_downloads", "human_size", "import_file", "is_path_ref", "known_checksum", "known_sha256",
           "manifest_record",
           "offline", "path_of", "replace_sources", "require", "require_all", "resolve", "sha256_file", "size_text",
           "test_load", "verify", "weights_home"]
