"""minigpt2.verify: run our forward pass next to a reference and say where the two part.

A reference is what transformers computes on the same weights and input ids: the activations after
every sub-step of every block, the hidden states and the logits. It comes live from transformers
(needs torch) or from a ``.npz`` file written earlier, so a check made on a machine with torch can
be repeated on one without.

    from minigpt2 import verify
    ref = verify.reference_from_transformers("path/to/model", [[464, 2068, 7586]])   # needs torch
    ref.save("ref.npz")
    report = verify.compare("path/to/model", "ref.npz")     # or a GPT2LMHeadModel, or a Reference
    print(report)                 # a table per layer and sub-step, the first place over tolerance
    report.passed, report.first_failure, report.last_fine

The places compared, in the order the forward pass computes them (the names of ``model(trace={})``):

    embed                wte[ids] + wpe[positions]                  [b, t, c]
    h.{i}.ln_1           ln_1(x)                                    [b, t, c]
    h.{i}.attn           attention output, after attn.c_proj        [b, t, c]
    h.{i}.resid_1        x + attn  (the first residual)             [b, t, c]
    h.{i}.ln_2           ln_2(resid_1)                              [b, t, c]
    h.{i}.mlp            MLP output, after mlp.c_proj               [b, t, c]
    h.{i}.out            resid_1 + mlp  (the block output)          [b, t, c]
    ln_f                 ln_f(last block output)                    [b, t, c]
    logits               ln_f @ wte.T                               [b, t, vocab]

Error measure: the relative error max|ours - ref| / max|ref| of each place (one number per array,
so near-zero entries do not blow it up), with the max absolute difference and the cosine
similarity shown beside it. A place is within tolerance when its relative error is <= tolerance.

Reference file (``.npz``, ``REFERENCE_FORMAT_VERSION`` = 1), keys:

    format_version   int64 scalar, 1
    source           str: what computed it (e.g. "transformers 5.24.0, torch 2.13.0, eager, float32")
    config_json      str: the model config as JSON, transformers' field names (config.json)
    input_ids        int64 [b, t]
    hidden_states    float32 [n_layer + 1, b, t, n_embd]  (transformers' hidden_states: embeddings,
                     the input of each block, and last the output of ln_f)
    logits           float32 [b, t, vocab_size]
    trace/<place>    float32, optional: one array per place above ("trace/h.0.ln_1", ...); all or none

Without traces only embed, the block outputs that are hidden states, ln_f and logits are compared.
"""

import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from minigpt2.verify_report import (  # noqa: F401  (re-exported: verify.VerifyReport, ...)
    TOP_K, PlaceDiff, VerifyReport, diff_place, top_k_agreement)

REFERENCE_FORMAT_VERSION = 1
DEFAULT_TOLERANCE = 1e-4     # float32 end to end agrees to ~1e-6; a real bug is off by 1e-3 or more
BLOCK_STEPS = ("ln_1", "attn", "resid_1", "ln_2", "mlp", "out")
# The config fields that change what the forward pass computes; the others (dropout, token ids,
# heads' settings) cannot make the numbers differ.
ARCHITECTURE_FIELDS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "inner_dim",
                       "activation_function", "layer_norm_epsilon", "scale_attn_weights",
                       "scale_attn_by_inverse_layer_idx")


def place_names(n_layer):
    """Every place compared, in forward order: embed, h.0.ln_1, ..., h.{n_layer-1}.out, ln_f, logits."""
    return (["embed"] + [f"h.{i}.{step}" for i in range(n_layer) for step in BLOCK_STEPS]
            + ["ln_f", "logits"])


# ---- the reference ---------------------------------------------------------------------------

@dataclass
class Reference:
    """What a reference implementation computed for some input ids (see the module docstring)."""
    input_ids: np.ndarray            # int64 [b, t]
    config: dict                     # config.json fields
    hidden_states: np.ndarray        # float32 [n_layer + 1, b, t, c]
    logits: np.ndarray               # float32 [b, t, vocab]
    traces: dict = field(default_factory=dict)    # place -> float32 array; empty when not recorded
    source: str = "unknown"

    @property
    def n_layer(self):
        return self.hidden_states.shape[0] - 1

    def places(self):
        """{place: array} for every place this reference can be compared at, in forward order."""
        if self.traces:
            return {name: self.traces[name] for name in place_names(self.n_layer)}
        # hidden_states[i] is the input of block i, so the output of block i - 1; the last one is
        # after ln_f, which leaves the last block's own output unrecorded
        places = {"embed": self.hidden_states[0]}
        for i in range(self.n_layer - 1):
            places[f"h.{i}.out"] = self.hidden_states[i + 1]
        places["ln_f"] = self.hidden_states[-1]
        places["logits"] = self.logits
        return places

    def save(self, path):
        """Write the reference to ``path`` (exactly that name; ``.npz`` is the usual ending)."""
        arrays = {
            "format_version": np.int64(REFERENCE_FORMAT_VERSION),
            "source": np.array(self.source),
            "config_json": np.array(json.dumps(self.config, sort_keys=True)),
            "input_ids": np.asarray(self.input_ids, np.int64),
            "hidden_states": np.asarray(self.hidden_states, np.float32),
            "logits": np.asarray(self.logits, np.float32),
        }
        for name, array in self.traces.items():
            arrays[f"trace/{name}"] = np.asarray(array, np.float32)
        with open(path, "wb") as f:             # a file object: numpy would append ".npz" to a name
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path):
        """Read a reference written by ``save`` (or ``minigpt2 verify --save-reference``)."""
        path = os.fspath(path)
        try:
            npz = np.load(path, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array")
            with npz:
                arrays = {name: npz[name] for name in npz.files}
        except (ValueError, zipfile.BadZipFile, EOFError) as error:
            # numpy reads any other file as a pickle, which it refuses: say so plainly
            why = "neither .npz nor .npy" if "allow_pickle" in str(error) else error
            raise ValueError(f"{path}: not a reference .npz file ({why})") from None
        except IsADirectoryError:
            raise ValueError(f"{path} is a folder; pass the reference .npz file") from None
        required = ("format_version", "config_json", "input_ids", "hidden_states", "logits")
        missing = [key for key in required if key not in arrays]
        if missing:
            raise ValueError(f"{path}: missing key(s) {', '.join(missing)}; a reference has "
                             f"{', '.join(required)} (see minigpt2.verify)")
        version = int(arrays["format_version"])
        if version != REFERENCE_FORMAT_VERSION:
            raise ValueError(f"{path}: reference format version {version}, this minigpt2 reads "
                             f"version {REFERENCE_FORMAT_VERSION}")
        try:
            config = json.loads(str(arrays["config_json"]))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: config_json is not valid JSON ({error})") from None
        traces = {key[len("trace/"):]: value for key, value in arrays.items() if key.startswith("trace/")}
        reference = cls(input_ids=arrays["input_ids"], config=config,
                        hidden_states=arrays["hidden_states"], logits=arrays["logits"],
                        traces=traces, source=str(arrays.get("source", "unknown")))
        reference.check(path)
        return reference

    def check(self, origin="reference"):
        """Raise ValueError unless the arrays have the shapes the config and the input ids imply."""
        from minigpt2.config import GPT2Config

        try:
            cfg = GPT2Config(**self.config)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{origin}: config_json is not a GPT-2 config ({error})") from None
        ids = np.asarray(self.input_ids)
        if ids.ndim != 2 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{origin}: input_ids must be integers [batch, seq], got {ids.dtype} "
                             f"{ids.shape}")
        if ids.min() < 0 or ids.max() >= cfg.vocab_size:
            raise ValueError(f"{origin}: input_ids must be in 0..{cfg.vocab_size - 1} (the vocab_size of "
                             f"its config), got {int(ids.min() if ids.min() < 0 else ids.max())}")
        b, t = ids.shape
        expected = {"hidden_states": (cfg.n_layer + 1, b, t, cfg.n_embd),
                    "logits": (b, t, cfg.vocab_size)}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"{origin}: {name} has shape {getattr(self, name).shape}, expected "
                                 f"{shape} from its config and input_ids")
        if self.traces:
            names = place_names(cfg.n_layer)
            missing = [name for name in names if name not in self.traces]
            if missing:
                raise ValueError(f"{origin}: traces are incomplete, missing trace/{missing[0]}"
                                 f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}")
            for name in names:
                shape = expected["logits"] if name == "logits" else (b, t, cfg.n_embd)
                if self.traces[name].shape != shape:
                    raise ValueError(f"{origin}: trace/{name} has shape {self.traces[name].shape}, "
                                     f"expected {shape}")


def _import_torch_and_transformers():
    try:
        import torch
        import transformers
    except ImportError as error:
        raise ImportError(
            f"comparing with transformers needs the optional packages torch and transformers "
            f"({error}); install them (pip install torch transformers), or check against a reference "
            f"saved on a machine that has them: minigpt2 verify --reference FILE") from None
    return torch, transformers


def reference_from_transformers(folder, input_ids, traces=True):
    """Run transformers' GPT2LMHeadModel (float32, eager attention) from ``folder`` on ``input_ids``
    [b, t] and record what it computes. Sub-steps are caught with forward hooks on ln_1, attn,
    ln_2, mlp and each block; resid_1 = block input + attention output, as the block computes it."""
    torch, transformers = _import_torch_and_transformers()
    folder = os.fspath(folder)
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must be integers [batch, seq], got {ids.dtype} {ids.shape}")
    progress_bar = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()       # no "Loading weights" bar in a report
    try:
        model = transformers.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager",
                                                              dtype=torch.float32).eval()
    finally:
        if progress_bar:
            transformers.utils.logging.enable_progress_bar()
    if ids.min() < 0 or ids.max() >= model.config.vocab_size:
        raise ValueError(f"input_ids must be in 0..{model.config.vocab_size - 1} "
                         f"(vocab_size of {folder})")
    captured, handles = {}, []

    def keep(name):
        """A forward hook storing the module's output (the first element of a tuple: attn returns
        (output, weights), and blocks of transformers 4 returned tuples too)."""
        def hook(module, args, output):
            if isinstance(output, tuple):
                output = output[0]
            captured[name] = output.detach().float().numpy().copy()
        return hook

    def keep_input(name):
        def hook(module, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            captured[name] = x.detach().float().numpy().copy()
        return hook

    if traces:
        for i, block in enumerate(model.transformer.h):
            handles += [block.register_forward_pre_hook(keep_input(f"h.{i}.input"), with_kwargs=True),
                        block.ln_1.register_forward_hook(keep(f"h.{i}.ln_1")),
                        block.attn.register_forward_hook(keep(f"h.{i}.attn")),
                        block.ln_2.register_forward_hook(keep(f"h.{i}.ln_2")),
                        block.mlp.register_forward_hook(keep(f"h.{i}.mlp")),
                        block.register_forward_hook(keep(f"h.{i}.out"))]
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(ids.astype(np.int64)), output_hidden_states=True)
    finally:
        for handle in handles:
            handle.remove()
    hidden_states = np.stack([h.float().numpy() for h in out.hidden_states])   # [n_layer + 1, b, t, c]
    logits = out.logits.float().numpy()                                          # [b, t, v]
    recorded = {}
    if traces:
        recorded["embed"] = hidden_states[0]
        for i in range(model.config.n_layer):
            for step in BLOCK_STEPS:
                recorded[f"h.{i}.{step}"] = (captured[f"h.{i}.input"] + captured[f"h.{i}.attn"]
                                             if step == "resid_1" else captured[f"h.{i}.{step}"])
        recorded["ln_f"] = hidden_states[-1]
        recorded["logits"] = logits
    config = json.loads(model.config.to_json_string(use_diff=False))
    source = (f"transformers {transformers.__version__}, torch {torch.__version__}, eager attention, "
              f"float32")
    reference = Reference(input_ids=ids.astype(np.int64), config=config, hidden_states=hidden_states,
                          logits=logits, traces=recorded, source=source)
    reference.check(source)
    return reference


def reference_from_model(model, input_ids):
    """A Reference from one of our own models (e.g. the numpy backend, to check the numba one)."""
    ids = np.asarray(input_ids)
    ids = ids[None, :] if ids.ndim == 1 else ids
    trace = {}
    out = model(ids, output_hidden_states=True, trace=trace)
    config = model.config.to_dict()
    return Reference(input_ids=ids.astype(np.int64), config=config,
                     hidden_states=np.stack(out.hidden_states), logits=out.logits,
                     traces={name: trace[name] for name in place_names(model.config.n_layer)},
                     source=f"minigpt2 ({model.backend} backend)")


def _model_folder(name_or_folder):
    """A folder as it is; a model name through minigpt2.weights.hub (the local cache, else a download)."""
    if os.path.isdir(os.fspath(name_or_folder)):
        return os.fspath(name_or_folder)
    from minigpt2.weights.hub import resolve_model_folder

    return resolve_model_folder(os.fspath(name_or_folder))


def model_places(model, input_ids):
    """Run our GPT2LMHeadModel on input_ids [b, t] and return {place: array} in forward order."""
    trace = {}
    model(input_ids, trace=trace)
    return {name: trace[name] for name in place_names(model.config.n_layer)}


def check_reference_fits(reference, config, input_ids=None, origin="the reference"):
    """Raise ValueError if ``reference`` was made for another architecture or other input ids."""
    from minigpt2.config import GPT2Config

    theirs = GPT2Config(**reference.config)
    differing = [f"{name}: {getattr(theirs, name)!r} in {origin}, {getattr(config, name)!r} in the model"
                 for name in ARCHITECTURE_FIELDS if getattr(theirs, name) != getattr(config, name)]
    if differing:
        raise ValueError(f"{origin} was made for a different model config: " + "; ".join(differing))
    if input_ids is not None:
        ids = np.asarray(input_ids)
        ids = ids[None, :] if ids.ndim == 1 else ids
        ref_ids = reference.input_ids
        if ids.shape != ref_ids.shape:
            raise ValueError(f"{origin} was made for input ids of shape {tuple(ref_ids.shape)}, got "
                             f"{tuple(ids.shape)}: pass the same ids (or none, to use the reference's)")
        if not np.array_equal(ids, ref_ids):
            row, col = (int(v) for v in np.argwhere(ids != ref_ids)[0])
            raise ValueError(f"{origin} was made for other input ids: at [{row}, {col}] it has "
                             f"{int(ref_ids[row, col])}, got {int(ids[row, col])} (pass the same "
                             f"ids, or none, to use the reference's)")


def compare(model, reference, input_ids=None, tolerance=DEFAULT_TOLERANCE, backend="numba"):
    """Compare our forward pass with a reference, place by place; returns a VerifyReport.

    model: a GPT2LMHeadModel, or a folder / model name (loaded with ``backend``).
    reference: a Reference, a path to a reference .npz, or "transformers" (run transformers live on
    the same folder: needs torch, a folder or name for ``model``, and ``input_ids``).
    input_ids [b, t]: required with "transformers"; with a saved reference they are optional and
    must be the reference's own.
    """
    from minigpt2.model import GPT2LMHeadModel

    if not isinstance(tolerance, (int, float, np.number)) or not tolerance > 0:
        raise ValueError(f"tolerance must be a number > 0, got {tolerance!r}")
    folder = None
    if not isinstance(model, GPT2LMHeadModel):
        folder = _model_folder(model)
        model = GPT2LMHeadModel.from_pretrained(folder, backend=backend)
    origin = "the reference"
    if isinstance(reference, str) and reference == "transformers":
        if folder is None:
            raise ValueError('reference="transformers" needs the model as a folder or name (transformers '
                             'loads the same files), not a GPT2LMHeadModel')
        if input_ids is None:
            raise ValueError('reference="transformers" needs input_ids')
        reference = reference_from_transformers(folder, input_ids)
    elif not isinstance(reference, Reference):
        origin = os.fspath(reference)
        reference = Reference.load(reference)
    check_reference_fits(reference, model.config, input_ids, origin)

    theirs = reference.places()
    ours = model_places(model, reference.input_ids)
    places = [diff_place(name, ours[name], theirs[name], tolerance) for name in theirs]
    b, t = reference.input_ids.shape
    description = f"minigpt2 ({model.backend} backend)" + (f", {folder}" if folder else "")
    ref_description = reference.source + (f" ({origin})" if origin != "the reference" else "")
    return VerifyReport(places=places, tolerance=tolerance,
                        top1=top_k_agreement(ours["logits"], reference.logits, 1),
                        top5=top_k_agreement(ours["logits"], reference.logits, TOP_K),
                        n_positions=b * t, ours=description + f", input {b} x {t} tokens",
                        reference=ref_description, has_traces=bool(reference.traces))
