"""Shared by the generation and scoring tests: random transformers models with spread-out
weights, and an adapter that gives transformers' forward pass minigpt2's calling convention
(so the decode loop and the scoring windows can be tested alone, before the engine is involved)."""

import functools

import numpy as np
import pytest


@functools.lru_cache(maxsize=None)
def noisy_hf_model(seed, vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=128):
    """A random transformers GPT-2 with weights spread out (std 0.02 init gives near-ties)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.set_num_threads(1)          # tiny models: threads only fight the other tests for cores
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=vocab_size, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                                     n_positions=n_positions, bos_token_id=vocab_size - 1,
                                     eos_token_id=vocab_size - 1)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln" not in name:
                param.add_(torch.randn_like(param) * 0.15)
    return model


class TorchForward:
    """transformers' GPT-2 behind minigpt2's calling convention: NumPy in, NumPy logits out."""

    def __init__(self, hf_model):
        self.hf_model, self.config = hf_model, hf_model.config
        self.calls = []

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                 use_cache=False, logits_to_keep=0):
        import torch
        self.calls.append(input_ids.shape)
        tensor = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a))
        with torch.no_grad():
            out = self.hf_model(input_ids=tensor(input_ids), attention_mask=tensor(attention_mask),
                                position_ids=tensor(position_ids), past_key_values=past_key_values,
                                use_cache=use_cache, logits_to_keep=logits_to_keep)
        return type("Out", (), {"logits": out.logits.numpy(), "past_key_values": out.past_key_values})()


def write_random_model(folder, seed=0, scale=0.3, **config_fields):
    """Save a random minigpt2 model folder (config.json + model.safetensors, HF names) without
    torch. Defaults: the real 50257 vocabulary (so the GPT-2 tokenizer works with it), tiny width."""
    from minigpt2.weights.checkpoints import expected_body_shapes
    from minigpt2.config import GPT2Config
    from minigpt2.weights.safetensors import save_file

    fields = dict(n_embd=16, n_layer=2, n_head=2, n_positions=64)
    fields.update(config_fields)
    config = GPT2Config(**fields)
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in expected_body_shapes(config).items():
        if ".ln_" in name or name.startswith("ln_f"):
            base = 1.0 if name.endswith("weight") else 0.0
            weights[name] = (base + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            weights[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
    config.save_pretrained(folder)
    save_file(weights, f"{folder}/model.safetensors")
    return folder
