"""Transformer models as Keras 3 functional models with Hugging Face's names: ``tiny-llama``, ``tiny-bert``, ``tiny-gpt2``.

The same network as the torch backend's ``transformers.LlamaForCausalLM`` (backends/torch_backend/hf.py),
built from Keras layers, so the canonical state of one loads into the other (the weights of one
are the weights of the other, logits equal within float32 rounding: tests/backends/test_tf_hf.py):

- every weighted layer is a Keras layer named as the Hugging Face module (``model.embed_tokens``,
  ``model.layers.0.self_attn.q_proj``, ``model.layers.0.mlp.down_proj``, ``model.norm``,
  ``lm_head``), so its canonical tensor is ``NAME.weight`` as in a Hugging Face state dict;
  projections are ``Dense`` layers without bias on ``[batch, seq, hidden]`` (canonical
  ``[out, in]``: the layer views transpose the kernel), so selectors, masks, codes and the
  calibrated methods (``prune wanda|sparsegpt``: :meth:`Dense.input`) see them as linear layers;
- RMSNorm (``x * rsqrt(mean(x^2) + eps) * weight``, eps 1e-6, in float32) and the attention core
  (rotary positions as ``transformers`` applies them, ``rotate_half`` of the two halves, base
  10000; causal scaled dot-product; softmax in float32) are two small weightless-or-one-weight
  layers registered for safe-mode loading (``lwdsl>RMSNorm``, ``lwdsl>CausalSelfAttention``);
- SwiGLU MLP: ``down(silu(gate(x)) * up(x))``; residual adds; untied head.

Initialisation follows ``transformers``' Llama: projections and embeddings normal(0, 0.02),
norms one, drawn from Keras's seeded generator with one initializer per tensor (:func:`_normal`;
so the same seed gives the same model here, not the same numbers as torch's generator: use a
checkpoint to start both from one set of weights).
Sizes as on torch: ``tiny-llama?layers=4&hidden=256&heads=8&mlp=1024``.

``tiny-gpt2`` is ``GPT2LMHeadModel`` (:func:`_gpt2`): token and learned position embeddings
(``transformer.wte``, ``transformer.wpe``), per block LayerNorm (eps 1e-5) before the attention
and the MLP, residual adds, a final ``transformer.ln_f`` and an untied ``lm_head``; no dropout
(as the torch backend's). GPT-2's ``Conv1D`` projections (``attn.c_attn``, ``attn.c_proj``,
``mlp.c_fc``, ``mlp.c_proj``: ``y = x W + b`` with ``W`` stored ``[in, out]``) are ``Dense``
layers with bias: a Dense kernel *is* ``[in, out]``, and its canonical weight is ``[out, in]``,
the torch backend's ``Conv1DLinear`` (so one canonical state runs on both, and ``c_attn``'s
``[3 * hidden, hidden]`` rows are q, k, v in that order). The attention core takes ``c_attn``'s
fused output (:class:`SelfAttention` ``fused=True``: split in three, causal, no rotary, scaled
by ``1/sqrt(head size)``) and the MLP's activation is ``gelu_new`` (the tanh approximation,
:class:`NewGELU`). Initialisation as ``transformers``': normal(0, 0.02), the residual
projections (``c_proj``) normal(0, 0.02 / sqrt(2 * layers)), biases zero, norms one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lwdsl.backend.transformer_sizes import transformer_sizes
from lwdsl.backend.zoo import TRANSFORMERS
from lwdsl.errors import UsageError

from ._tf import keras

__all__ = ["HF_NAMES", "build_hf", "takes_tokens", "RMSNorm", "SelfAttention", "TokenPositions", "NewGELU"]

#: Names built here, with their default sizes (the core's table, :data:`lwdsl.backend.zoo.TRANSFORMERS`).
HF_NAMES = {name: TRANSFORMERS[name] for name in ('tiny-llama', 'tiny-bert', 'tiny-gpt2')}

#: ``transformers``' defaults: Llama's RMSNorm epsilon and rotary base, BERT's LayerNorm
#: epsilon, the initialisation's standard deviation (all), GPT-2's LayerNorm epsilon.
RMS_EPS, ROPE_BASE, LN_EPS, INIT_STD, GPT2_LN_EPS = 1e-6, 10000.0, 1e-12, 0.02, 1e-5


def _normal(std: float = INIT_STD) -> Any:
    """A new normal(0, ``std``) initializer for one variable. Keras 3 fixes an unseeded
    initializer's seed when it is made (from Python's generator, which the run's seed sets), so
    one instance shared by several layers gives every tensor of a shape the same numbers (a
    head equal to the embeddings, every layer's projections alike); one per layer does not."""
    return keras.initializers.RandomNormal(stddev=std)


def takes_tokens(model: Any) -> bool:
    """Whether ``model`` takes token ids (int ``[batch, seq]``) rather than images."""
    return any(isinstance(layer, keras.layers.Embedding) for layer in model.layers[:3]) and len(model.inputs[0].shape) == 2


@keras.saving.register_keras_serializable(package="lwdsl")
class RMSNorm(keras.layers.Layer):
    """``x * rsqrt(mean(x^2, -1) + eps) * weight`` computed in float32 (Llama's RMSNorm); one
    variable named ``weight`` (canonical ``NAME.weight``)."""

    def __init__(self, eps: float = RMS_EPS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eps = float(eps)

    def build(self, input_shape: Any) -> None:
        self.weight = self.add_weight(name="weight", shape=(int(input_shape[-1]),), initializer="ones")

    def call(self, x: Any) -> Any:
        ops = keras.ops
        x32 = ops.cast(x, "float32")
        out = x32 * ops.rsqrt(ops.mean(ops.square(x32), axis=-1, keepdims=True) + self.eps)
        return ops.cast(self.weight * ops.cast(out, self.compute_dtype), self.compute_dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "eps": self.eps}


@keras.saving.register_keras_serializable(package="lwdsl")
class SelfAttention(keras.layers.Layer):
    """The attention core between the projections: ``[q, k, v]`` (each ``[batch, seq, hidden]``)
    -> ``[batch, seq, hidden]``; Llama's (``causal``, ``rotary``): rotary positions on q and k
    (``transformers``' ``rotate_half``), causal; BERT's: neither; GPT-2's: causal, and ``fused``
    (one ``[batch, seq, 3 * hidden]`` input, ``c_attn``'s, split into q, k, v). Scaled
    dot-product, softmax in float32. No weights."""

    def __init__(self, heads: int, causal: bool = True, rotary: bool = True, base: float = ROPE_BASE, fused: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.heads, self.causal, self.rotary, self.base = int(heads), bool(causal), bool(rotary), float(base)
        self.fused = bool(fused)

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        q, k, v = ops.split(inputs, 3, axis=-1) if self.fused else inputs
        seq, hidden = ops.shape(q)[1], q.shape[-1]
        d = hidden // self.heads

        def split(t: Any) -> Any:  # [b, s, h*d] -> [b, h, s, d]
            return ops.transpose(ops.reshape(t, (-1, seq, self.heads, d)), (0, 2, 1, 3))

        q, k, v = split(q), split(k), split(v)
        if self.rotary:
            inv = 1.0 / (self.base ** (np.arange(0, d, 2, dtype=np.float32) / d))
            freqs = ops.cast(ops.arange(seq), "float32")[:, None] * ops.convert_to_tensor(inv)[None, :]
            emb = ops.concatenate([freqs, freqs], axis=-1)
            cos, sin = ops.cast(ops.cos(emb), q.dtype), ops.cast(ops.sin(emb), q.dtype)

            def rope(t: Any) -> Any:
                half = d // 2
                rotated = ops.concatenate([-t[..., half:], t[..., :half]], axis=-1)
                return t * cos + rotated * sin

            q, k = rope(q), rope(k)
        scores = ops.cast(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))), "float32") * (1.0 / float(np.sqrt(d)))
        if self.causal:
            causal = ops.tril(ops.ones((seq, seq), dtype="bool"))
            scores = ops.where(causal[None, None], scores, ops.cast(np.finfo(np.float32).min, "float32"))
        probs = ops.cast(ops.softmax(scores, axis=-1), v.dtype)
        out = ops.matmul(probs, v)  # [b, h, s, d]
        return ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (-1, seq, hidden))

    def compute_output_shape(self, input_shape: Any) -> Any:
        if self.fused:  # [b, s, 3 * hidden] -> [b, s, hidden]
            return (*input_shape[:-1], None if input_shape[-1] is None else input_shape[-1] // 3)
        return input_shape[0]

    def get_config(self) -> dict:
        return {**super().get_config(), "heads": self.heads, "causal": self.causal, "rotary": self.rotary, "base": self.base,
                "fused": self.fused}


@keras.saving.register_keras_serializable(package="lwdsl")
class TokenPositions(keras.layers.Layer):
    """Token ids ``[batch, seq]`` -> the ids BERT's embeddings look up beside them: the positions
    ``0..seq-1`` (``what="positions"``) or token type 0 (``what="types"``), ``[batch, seq]``. No weights."""

    def __init__(self, what: str = "positions", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.what = what

    def call(self, ids: Any) -> Any:
        ops = keras.ops
        if self.what == "types":
            return ops.zeros_like(ids)
        return ops.zeros_like(ids) + ops.cast(ops.arange(ops.shape(ids)[1]), ids.dtype)[None, :]

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "what": self.what}


@keras.saving.register_keras_serializable(package="lwdsl")
class NewGELU(keras.layers.Layer):
    """GPT-2's ``gelu_new`` (``transformers``' ``NewGELUActivation``): ``0.5 x (1 + tanh(sqrt(2 /
    pi) (x + 0.044715 x^3)))``, the tanh approximation. No weights."""

    def call(self, x: Any) -> Any:
        return keras.ops.gelu(x, approximate=True)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


def build_hf(ref: str, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """``tiny-llama`` / ``tiny-gpt2`` (``?key=value&...`` for other sizes) for token sequences of
    ``input_shape`` = ``(seq,)`` and a vocabulary of ``num_classes`` (``tiny-bert``: a classifier
    of ``num_classes``), freshly initialised."""
    name, _, query = ref.partition("?")
    sizes = transformer_sizes(name, query)
    if len(input_shape) != 1:
        raise UsageError(f"{name} takes token sequences, not inputs of shape {tuple(input_shape)}",
                         hint="use it with text data (--data pydoc, or a text file)")
    length = int(input_shape[0])
    if name == "tiny-bert":
        return _bert(sizes, length, int(num_classes))
    if name == "tiny-gpt2":
        return _gpt2(sizes, length, int(num_classes))
    return _llama(sizes, length, int(num_classes))


def _llama(sizes: dict[str, int], length: int, vocab: int, eps: float = RMS_EPS, base: float = ROPE_BASE) -> Any:
    """Llama (``LlamaForCausalLM``, see the module's doc) with the Hugging Face names."""
    hidden, heads, mlp = sizes["hidden"], sizes["heads"], sizes["mlp"]
    layers = keras.layers

    def dense(units: int, label: str) -> Any:
        return layers.Dense(units, use_bias=False, kernel_initializer=_normal(), name=label)

    ids = keras.Input((length,), dtype="int64", name="input_ids")
    x = layers.Embedding(vocab, hidden, embeddings_initializer=_normal(), name="model.embed_tokens")(ids)
    for i in range(sizes["layers"]):
        at = f"model.layers.{i}"
        h = RMSNorm(eps, name=f"{at}.input_layernorm")(x)
        q, k, v = (dense(hidden, f"{at}.self_attn.{p}_proj")(h) for p in "qkv")
        a = SelfAttention(heads, base=base, name=f"{at}.self_attn")([q, k, v])
        x = layers.Add(name=f"{at}.attn_residual")([x, dense(hidden, f"{at}.self_attn.o_proj")(a)])
        h = RMSNorm(eps, name=f"{at}.post_attention_layernorm")(x)
        gate = layers.Activation("silu", name=f"{at}.mlp.act_fn")(dense(mlp, f"{at}.mlp.gate_proj")(h))
        up = dense(mlp, f"{at}.mlp.up_proj")(h)
        m = layers.Multiply(name=f"{at}.mlp.gated")([gate, up])
        x = layers.Add(name=f"{at}.mlp_residual")([x, dense(hidden, f"{at}.mlp.down_proj")(m)])
    x = RMSNorm(eps, name="model.norm")(x)
    logits = dense(vocab, "lm_head")(x)
    return keras.Model(ids, logits, name="tiny-llama")


def _gpt2(sizes: dict[str, int], length: int, vocab: int, eps: float = GPT2_LN_EPS) -> Any:
    """GPT-2 (``GPT2LMHeadModel``, see the module's doc) with the Hugging Face names."""
    if length > sizes["positions"]:
        sizes = {**sizes, "positions": length}
    hidden, heads, mlp, count = sizes["hidden"], sizes["heads"], sizes["mlp"], sizes["layers"]
    layers = keras.layers
    residual = INIT_STD / float(np.sqrt(2 * count))  # c_proj's, as transformers

    def dense(units: int, label: str, std: float = INIT_STD) -> Any:
        return layers.Dense(units, kernel_initializer=_normal(std), name=label)

    def norm(label: str) -> Any:
        return layers.LayerNormalization(epsilon=eps, name=label)

    ids = keras.Input((length,), dtype="int64", name="input_ids")
    at = "transformer"
    x = layers.Add(name=f"{at}.embeddings")([
        layers.Embedding(vocab, hidden, embeddings_initializer=_normal(), name=f"{at}.wte")(ids),
        layers.Embedding(sizes["positions"], hidden, embeddings_initializer=_normal(), name=f"{at}.wpe")(
            TokenPositions(name=f"{at}.position_ids")(ids))])
    for i in range(count):
        at = f"transformer.h.{i}"
        qkv = dense(3 * hidden, f"{at}.attn.c_attn")(norm(f"{at}.ln_1")(x))
        a = SelfAttention(heads, causal=True, rotary=False, fused=True, name=f"{at}.attn")(qkv)
        x = layers.Add(name=f"{at}.attn_residual")([dense(hidden, f"{at}.attn.c_proj", residual)(a), x])
        m = NewGELU(name=f"{at}.mlp.act")(dense(mlp, f"{at}.mlp.c_fc")(norm(f"{at}.ln_2")(x)))
        x = layers.Add(name=f"{at}.mlp_residual")([dense(hidden, f"{at}.mlp.c_proj", residual)(m), x])
    x = norm("transformer.ln_f")(x)
    logits = layers.Dense(vocab, use_bias=False, kernel_initializer=_normal(), name="lm_head")(x)
    return keras.Model(ids, logits, name="tiny-gpt2")


def _bert(sizes: dict[str, int], length: int, classes: int) -> Any:
    """BERT's encoder classifier (``BertForSequenceClassification``): word + position + token
    type 0 embeddings, LayerNorm; per layer self-attention (biases, no mask) with output dense,
    residual and LayerNorm, then GELU (exact) MLP, residual and LayerNorm; the pooler (dense, tanh
    on the first token); the classifier. Dropout 0.1 where BERT has it (training only)."""
    if length > sizes["positions"]:
        sizes = {**sizes, "positions": length}
    hidden, heads, mlp = sizes["hidden"], sizes["heads"], sizes["mlp"]
    layers = keras.layers

    def dense(units: int, label: str, activation: Any = None) -> Any:
        return layers.Dense(units, kernel_initializer=_normal(), activation=activation, name=label)

    def norm(label: str) -> Any:
        return layers.LayerNormalization(epsilon=LN_EPS, name=label)

    def embed(count: int, label: str) -> Any:
        return layers.Embedding(count, hidden, embeddings_initializer=_normal(), name=label)

    ids = keras.Input((length,), dtype="int64", name="input_ids")
    at = "bert.embeddings"
    x = layers.Add(name=f"{at}.sum")([embed(sizes["vocab"], f"{at}.word_embeddings")(ids),
                                      embed(sizes["positions"], f"{at}.position_embeddings")(TokenPositions(name=f"{at}.position_ids")(ids)),
                                      embed(2, f"{at}.token_type_embeddings")(TokenPositions("types", name=f"{at}.token_type_ids")(ids))])
    x = layers.Dropout(0.1, name=f"{at}.dropout")(norm(f"{at}.LayerNorm")(x))
    for i in range(sizes["layers"]):
        at = f"bert.encoder.layer.{i}"
        q, k, v = (dense(hidden, f"{at}.attention.self.{p}")(x) for p in ("query", "key", "value"))
        a = SelfAttention(heads, causal=False, rotary=False, name=f"{at}.attention.self")([q, k, v])
        a = layers.Dropout(0.1, name=f"{at}.attention.output.dropout")(dense(hidden, f"{at}.attention.output.dense")(a))
        x = norm(f"{at}.attention.output.LayerNorm")(layers.Add(name=f"{at}.attention.residual")([a, x]))
        m = dense(mlp, f"{at}.intermediate.dense", activation="gelu")(x)
        m = layers.Dropout(0.1, name=f"{at}.output.dropout")(dense(hidden, f"{at}.output.dense")(m))
        x = norm(f"{at}.output.LayerNorm")(layers.Add(name=f"{at}.output.residual")([m, x]))
    first = _FirstToken(name="bert.pooler.first_token")
    pooled = dense(hidden, "bert.pooler.dense", activation="tanh")(first(x))
    logits = dense(classes, "classifier")(layers.Dropout(0.1, name="bert.classifier_dropout")(pooled))
    return keras.Model(ids, logits, name="tiny-bert")


@keras.saving.register_keras_serializable(package="lwdsl")
class _FirstToken(keras.layers.Layer):
    """``[batch, seq, hidden]`` -> the first token's ``[batch, hidden]`` (BERT's pooler input)."""

    def call(self, x: Any) -> Any:
        return x[:, 0]

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], input_shape[2])
