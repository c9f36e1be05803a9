"""Build random GPT-2 models with transformers and record what they compute (the test oracle).

Used by tests/fixtures/make_fixtures.py (committed .npz references) and by the live cross-check
tests (when transformers is importable). Needs torch + transformers; the library never imports it.
"""

import numpy as np

# name -> GPT2Config kwargs. Small vocab / n_positions keep the committed fixtures small.
COMMON = dict(vocab_size=512, n_positions=64)
FIXTURE_SPECS = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=4),
    "odd": dict(n_layer=3, n_embd=48, n_head=3, n_inner=80, activation_function="gelu"),
    "inverse_layer_idx": dict(n_layer=3, n_embd=32, n_head=2, scale_attn_by_inverse_layer_idx=True,
                              activation_function="relu"),
    "unscaled": dict(n_layer=2, n_embd=32, n_head=2, scale_attn_weights=False,
                     activation_function="quick_gelu"),
    "reorder_upcast": dict(n_layer=2, n_embd=32, n_head=4, reorder_and_upcast_attn=True,
                           activation_function="silu"),
    "gelu_fast": dict(n_layer=1, n_embd=32, n_head=2, activation_function="gelu_fast"),
    "gelu_pytorch_tanh": dict(n_layer=1, n_embd=32, n_head=2, activation_function="gelu_pytorch_tanh"),
    "tanh": dict(n_layer=1, n_embd=32, n_head=2, activation_function="tanh", n_inner=24),
}

BATCH, SEQ, PREFILL = 2, 10, 4     # reference inputs: 2 rows of 10 tokens; decode after 4


def build_hf_model(spec, seed=0):
    """A transformers GPT2LMHeadModel with random weights large enough that every op matters.

    transformers initialises with std 0.02, which makes attention almost uniform and the MLP
    almost linear: a wrong op would hide in the noise. So weights are redrawn at O(1) scale.
    """
    import torch
    import transformers

    config = transformers.GPT2Config(**{**COMMON, **spec}, bos_token_id=0, eos_token_id=0)
    config._attn_implementation = "eager"       # the only implementation that returns attentions
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config).eval()
    spread_weights(model)
    return model


def spread_weights(model):
    """Redraw every parameter of a transformers GPT-2 model (any head) at O(1) scale, in place,
    in named_parameters order so the same seed gives the same weights."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split(".")[-2] in ("ln_1", "ln_2", "ln_f") and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.ndim == 1:                                        # biases
                p.copy_(0.2 * torch.randn_like(p))
            elif "wte" in name or "wpe" in name:
                p.copy_(torch.randn_like(p))
            elif name.startswith("transformer."):                    # Conv1D [n_in, n_out]
                p.copy_(torch.randn_like(p) / p.shape[0] ** 0.5)
            else:                                                    # head nn.Linear [n_out, n_in]
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)


def reference_inputs(config, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, config.vocab_size, (BATCH, SEQ)).astype(np.int64)
    labels = ids.copy()
    labels[0, 3] = -100                                         # ignored positions
    labels[1, -2:] = -100
    mask_right = np.ones((BATCH, SEQ), np.int64)
    mask_right[1, -3:] = 0                                       # row 1: 7 tokens, then 3 pads
    mask_left = mask_right[:, ::-1].copy()                       # row 1: 3 pads, then 7 tokens
    ids_left = ids.copy()
    ids_left[1] = np.concatenate([np.zeros(3, np.int64), ids[1, :7]])  # the same 7 tokens, left-padded
    position_ids_left = np.maximum(np.cumsum(mask_left, axis=1) - 1, 0)
    token_type_ids = rng.integers(0, config.vocab_size, (BATCH, SEQ)).astype(np.int64)
    inputs_embeds = rng.standard_normal((BATCH, SEQ, config.n_embd)).astype(np.float32)
    head_mask = rng.uniform(0, 1, (config.n_layer, config.n_head)).astype(np.float32)
    head_mask[0, 0] = 0.0
    return dict(input_ids=ids, labels=labels, attention_mask_right=mask_right,
                attention_mask_left=mask_left, input_ids_left=ids_left,
                position_ids_left=position_ids_left, token_type_ids=token_type_ids,
                inputs_embeds=inputs_embeds, head_mask=head_mask)


def reference_outputs(model, inputs):
    """Everything the tests compare, computed by transformers in float32."""
    import copy

    import torch

    T = lambda a: torch.from_numpy(np.ascontiguousarray(a))       # noqa: E731
    N = lambda t: t.detach().numpy().astype(np.float32)            # noqa: E731
    out = {}
    with torch.no_grad():
        full = model(T(inputs["input_ids"]), labels=T(inputs["labels"]), output_hidden_states=True,
                     output_attentions=True)
        out["logits"] = N(full.logits)
        out["loss"] = np.float32(full.loss.item())
        out["hidden_states"] = np.stack([N(h) for h in full.hidden_states])   # [n_layer + 1, b, t, c]
        out["attentions"] = np.stack([N(a) for a in full.attentions])          # [n_layer, b, h, t, t]
        # right padding: transformers' arange positions are right for the real tokens
        out["logits_right_padded"] = N(model(T(inputs["input_ids"]),
                                             attention_mask=T(inputs["attention_mask_right"])).logits)
        # left padding: transformers' forward needs the positions spelled out
        out["logits_left_padded"] = N(model(T(inputs["input_ids_left"]),
                                            attention_mask=T(inputs["attention_mask_left"]),
                                            position_ids=T(inputs["position_ids_left"])).logits)
        out["logits_token_type"] = N(model(T(inputs["input_ids"]),
                                           token_type_ids=T(inputs["token_type_ids"])).logits)
        out["logits_inputs_embeds"] = N(model(inputs_embeds=T(inputs["inputs_embeds"])).logits)
        # incremental decoding with transformers' own cache: prefill, then one token at a time
        step = model(T(inputs["input_ids"][:, :PREFILL]), use_cache=True)
        pieces, cache = [N(step.logits)], step.past_key_values
        for i in range(PREFILL, inputs["input_ids"].shape[1]):
            step = model(T(inputs["input_ids"][:, i:i + 1]), past_key_values=cache, use_cache=True)
            pieces.append(N(step.logits))
            cache = step.past_key_values
        out["logits_decode"] = np.concatenate(pieces, axis=1)
        # head_mask (gone from transformers 5's GPT-2): multiplying head j's attention
        # probabilities by m scales that head's slice of the merged output by m, which is the
        # same as scaling rows j*d:(j+1)*d of attn.c_proj.weight by m.
        masked = copy.deepcopy(model)
        d = model.config.n_embd // model.config.n_head
        for layer, block in enumerate(masked.transformer.h):
            scale = torch.from_numpy(np.repeat(inputs["head_mask"][layer], d))[:, None]
            block.attn.c_proj.weight.mul_(scale)
        with_mask = masked(T(inputs["input_ids"]), output_attentions=True)
        out["logits_head_mask"] = N(with_mask.logits)
        # our probabilities come out multiplied by the head mask, as transformers 4 returned them
        out["attentions_head_mask"] = (np.stack([N(a) for a in with_mask.attentions])
                                       * inputs["head_mask"][:, None, :, None, None])
    return out
