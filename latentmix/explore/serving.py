"""Where the page listens and what it exposes: checked before anything loads, said plainly once it serves."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from latentmix.configs import ExploreConfig


def check_serving(config: ExploreConfig) -> None:
    """Refuse, in one line each, what would only fail later: an ``out`` that is a file (every export would fail), an
    upload limit above the largest image latentmix opens, a host that is not an address of this machine."""
    from latentmix.data import images

    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} is a file; the page writes its exports into a folder (a new or existing one)")
    if config.max_upload_pixels > images.MAX_IMAGE_PIXELS:
        raise ValueError(
            f"max_upload_pixels {config.max_upload_pixels:,} is above the largest image latentmix opens "
            f"({images.MAX_IMAGE_PIXELS:,}); raise that too with latentmix --max-image-pixels N"
        )
    try:
        family, kind, proto, _, where = socket.getaddrinfo(config.host, config.port or 0, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ValueError(f"host: {config.host!r} is not a host name or address this machine resolves ({exc})") from None
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind((where[0], 0))
        except OSError as exc:
            raise ValueError(f"host: {config.host} is not an address of this machine ({exc.strerror})") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))


def address(host: str, port: int) -> str:
    """The URL the page listens on, as a visitor types it (an IPv6 host in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def exposure_warning(config: ExploreConfig) -> str | None:
    """What a page on a non-loopback host exposes (None on this machine only)."""
    if is_loopback(config.host):
        return None
    everywhere = " (every interface)" if config.host in ("0.0.0.0", "::") else ""
    login = "visitors log in with --auth" if config.auth else "there is no login (--auth USER:PASSWORD adds one)"
    return (
        f"explore listens on {config.host}{everywhere}: anyone who can reach this machine can use the page; {login}; "
        f"every visitor can write up to {config.max_export:,} images under {config.out} in all (--max-export)"
    )
