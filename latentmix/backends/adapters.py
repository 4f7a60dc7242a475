"""Adapted diffusion models: textual-inversion embeddings added to a text-conditioned backend's text encoder.

``add_textual_inversion(text_encoder, spec)`` (what a text-conditioned backend's ``add_textual_inversion`` runs)
reads the files diffusers' ``textual_inversion.py`` and the community
tools write, as safetensors only (a pickle is refused, never unpickled):

* diffusers' ``learned_embeds.safetensors``: ``{token: (D,) or (n, D)}`` — the token comes from the file;
* Automatic1111 / kohya ``.safetensors``: ``{"emb_params": (n, D)}`` — name the token: ``"<my-token>=FILE"``;
* a directory: every ``.safetensors`` file in its ``learned_embeds/`` (what ``latentmix fit lora`` and
  ``fit textual-inversion`` write, one file per class token), else in the directory itself.

A file of ``n`` vectors adds the tokens ``token, token_1, …, token_{n-1}`` (diffusers' rule) and a prompt naming
``token`` reads all of them (:class:`~latentmix.data.text.TextEncoder` expands it). The vectors must have the
text encoder's embedding size, and a token the tokenizer already has is refused, so no existing word changes
meaning. The embedding rows are set exactly to the file's vectors; nothing else in the model changes.

SDXL has two text encoders, so its files (the community format that diffusers' ``load_textual_inversion`` docs
load one part at a time) hold one set of vectors for each: ``{"clip_l": (n, 768), "clip_g": (n, 1280)}``.
:func:`add_textual_inversion_xl` adds the token to both encoders; the token is ``TOKEN=FILE``'s, else the one the
file's safetensors metadata names (``{"token": …}``, as ``fit lora`` writes for SDXL), else the file's name without
``.safetensors`` (Automatic1111's rule), and both encoders are checked before either changes.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from latentmix.data.text import TextEncoder

NAME = "textual_inversion"
EMBEDS_DIR = "learned_embeds"
#: the keys of an SDXL textual-inversion file: the first text encoder's vectors, the second's
XL_PARTS = ("clip_l", "clip_g")


def parse_spec(spec: str | os.PathLike) -> tuple[str | None, Path]:
    """``"FILE"`` or ``"TOKEN=FILE"`` → (token or None, path)."""
    text = os.fspath(spec)
    if "=" in text and not Path(text).exists():
        token, _, path = text.partition("=")
        if not token.strip() or not path:
            raise ValueError(f"{NAME}: expected FILE or TOKEN=FILE, got {text!r}")
        return token.strip(), Path(path)
    return None, Path(text)


def read_embedding(token: str | None, path: Path) -> tuple[str, Tensor]:
    """The token (``token``, else the file's) and the (n, D) vectors of a textual-inversion file (see the module
    docstring)."""
    state = _load(path)
    if "emb_params" in state:
        if token is None:
            raise ValueError(f"{NAME}: {path} does not name its token (emb_params); give it as TOKEN={path}")
        vectors = state["emb_params"]
    elif len(state) == 1:
        ((name, vectors),) = state.items()
        token = token or name
    elif set(state) == set(XL_PARTS):
        raise ValueError(f"{NAME}: {path} is an SDXL embedding (clip_l and clip_g); this backend has one text encoder")
    else:
        raise ValueError(f"{NAME}: {path} holds {len(state)} tensors; expected one token's vectors or emb_params")
    return token, _vectors(vectors, path)


def read_xl_embedding(token: str | None, path: Path) -> tuple[str, Tensor, Tensor]:
    """The token (``token``, else the file's metadata's, else the file's name) and the (n, D1), (n, D2) vectors of
    an SDXL textual-inversion file (``clip_l``, ``clip_g``; see the module docstring)."""
    state = _load(path)
    token = token or _named_token(path)
    if set(state) != set(XL_PARTS):
        raise ValueError(f"{NAME}: {path} holds {', '.join(sorted(state))}; an SDXL embedding file holds clip_l and "
                         "clip_g (one set of vectors for each text encoder)")  # fmt: skip
    first, second = (_vectors(state[k], path) for k in XL_PARTS)
    if len(first) != len(second):
        raise ValueError(f"{NAME}: {path}: clip_l has {len(first)} vectors, clip_g {len(second)}; expected as many")
    return token or path.name.removesuffix(".safetensors"), first, second


def _named_token(path: Path) -> str | None:
    """The token a file's safetensors metadata names (``{"token": …}``: what ``fit lora`` writes for SDXL)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        token = (file.metadata() or {}).get("token")
    return (token.strip() or None) if isinstance(token, str) else None


def _load(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise ValueError(f"{NAME}: {path} is not a file")
    if path.suffix != ".safetensors":
        raise ValueError(f"{NAME}: {path} is not a .safetensors file; pickled embeddings (.bin, .pt) are not read")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{NAME}: {path} is not a readable safetensors file ({exc})") from None


def _vectors(vectors: Tensor, path: Path) -> Tensor:
    if vectors.dim() not in (1, 2) or vectors.numel() == 0 or not bool(torch.isfinite(vectors).all()):
        raise ValueError(f"{NAME}: {path}: the vectors must be a finite (D,) or (n, D) tensor, got "
                         f"{tuple(vectors.shape)}")  # fmt: skip
    return vectors.reshape(-1, vectors.shape[-1])


def new_tokens(text_encoder: TextEncoder, tokens: list[str], who: str, fix: str) -> list[int]:
    """Add ``tokens`` to the tokenizer and rows for them to the input embeddings (their values unset); returns
    their ids. A token the tokenizer already has is refused (``"{who} 'x' already exists in the tokenizer; {fix}"``),
    so no existing word changes meaning."""
    check_free(text_encoder, tokens, who, fix)
    return append_tokens(text_encoder, tokens)


def check_free(text_encoder: TextEncoder, tokens: list[str], who: str, fix: str) -> None:
    """A ValueError (see :func:`new_tokens`) when the tokenizer already has one of ``tokens``."""
    vocab = text_encoder.tokenizer.get_vocab()
    taken = next((t for t in tokens if t in vocab or t.lower() in vocab), None)
    if taken is not None:
        raise ValueError(f"{who} {taken!r} already exists in the tokenizer; {fix}")


def append_tokens(text_encoder: TextEncoder, tokens: list[str]) -> list[int]:
    """Add ``tokens`` (unchecked: see :func:`new_tokens`) and embedding rows for them; returns their ids."""
    tokenizer = text_encoder.tokenizer
    tokenizer.add_tokens(tokens)  # a tokenizer shared with another encoder, already extended: unchanged
    text_encoder.model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return tokenizer.convert_tokens_to_ids(tokens)


def embedding_files(directory: Path) -> list[Path]:
    """The textual-inversion files of a directory (see the module docstring)."""
    folder = directory / EMBEDS_DIR if (directory / EMBEDS_DIR).is_dir() else directory
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{NAME}: {folder} holds no .safetensors embedding files")
    return files


def _specs(spec: str | os.PathLike) -> list[tuple[str | None, Path]]:
    """(token or None, file) of each textual-inversion file ``spec`` names (``FILE``, ``TOKEN=FILE`` or a directory)."""
    token, path = parse_spec(spec)
    if not path.is_dir():
        return [(token, path)]
    if token is not None:
        raise ValueError(f"{NAME}: {path} is a directory; TOKEN=FILE names the token of one file")
    return [(None, file) for file in embedding_files(path)]


def add_textual_inversion(text_encoder: TextEncoder, spec: str | os.PathLike) -> list[str]:
    """Add a textual-inversion file's (or directory's) token(s) and vectors to ``text_encoder`` (its cache
    cleared); returns the tokens. Backends call this from
    :meth:`~latentmix.backends.base.LatentBackend.add_textual_inversion`."""
    out = []
    for token, file in _specs(spec):
        token, vectors = read_embedding(token, file)
        out += _add({"the text encoder's": text_encoder}, token, (vectors,), file)
    return out


def add_textual_inversion_xl(encoders: tuple[TextEncoder, TextEncoder], spec: str | os.PathLike) -> list[str]:
    """Add an SDXL textual-inversion file's (or directory's) token(s) to both text encoders (``clip_l``'s vectors
    to the first, ``clip_g``'s to the second); returns the tokens."""
    named = {"the first text encoder's": encoders[0], "the second text encoder's": encoders[1]}
    out = []
    for token, file in _specs(spec):
        token, first, second = read_xl_embedding(token, file)
        out += _add(named, token, (first, second), file)
    return out


def _add(encoders: dict[str, TextEncoder], token: str, vectors: tuple[Tensor, ...], path: Path) -> list[str]:
    """Add ``token`` (and ``token_1`` … for several vectors) to each encoder (named by whose embeddings they are,
    for the messages) with its own vectors; every encoder is checked before any changes."""
    tokens = [token] + [f"{token}_{i}" for i in range(1, len(vectors[0]))]
    for (whose, encoder), rows in zip(encoders.items(), vectors, strict=True):
        width = int(encoder.model.get_input_embeddings().weight.shape[1])
        if rows.shape[1] != width:
            raise ValueError(f"{NAME}: {path} holds vectors of size {rows.shape[1]}, {whose} embeddings are "
                             f"{width} wide (a file for another model)")  # fmt: skip
        check_free(encoder, tokens, f"{NAME}: token", "choose another (TOKEN=FILE)")
    for encoder, rows in zip(encoders.values(), vectors, strict=True):
        _set(encoder, tokens, rows)
    return tokens


def _set(text_encoder: TextEncoder, tokens: list[str], vectors: Tensor) -> None:
    """Append ``tokens`` with their embedding rows set to ``vectors``; a prompt's first token reads all of them."""
    ids = append_tokens(text_encoder, tokens)
    weight = text_encoder.model.get_input_embeddings().weight
    with torch.no_grad():
        weight[torch.tensor(ids, device=weight.device)] = vectors.to(device=weight.device, dtype=weight.dtype)
    if len(tokens) > 1:
        text_encoder.expansions[tokens[0]] = " ".join(tokens)
    text_encoder.clear_cache()
