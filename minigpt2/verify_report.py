"""minigpt2.verify_report: how far two forward passes are apart, place by place, and the report
(table, PASS/FAIL, plot) that ``minigpt2.verify.compare`` returns."""

import math
from dataclasses import dataclass

import numpy as np

TOP_K = 5
CHUNK_ELEMENTS = 2**22       # diff_place works on this many elements at a time (32 MB of float64)


def layer_of(name):
    """'h.3.mlp' -> 'h.3'; embed, ln_f and logits stand alone."""
    return name.rsplit(".", 1)[0] if name.startswith("h.") else name


# ---- the comparison --------------------------------------------------------------------------

@dataclass
class PlaceDiff:
    """How far our activation at one place is from the reference's."""
    name: str
    shape: tuple
    max_abs: float          # max |ours - ref|
    max_rel: float          # max |ours - ref| / max |ref|
    cosine: float           # cosine similarity of the two arrays, flattened
    ok: bool                # max_rel <= tolerance


def diff_place(name, ours, ref, tolerance):
    """Compare one place in float64, so the measure adds no rounding of its own. Large arrays (the
    logits of a long text) go in chunks of rows, so float64 copies never cost more than ~32 MB."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape:
        raise ValueError(f"{name}: ours has shape {ours.shape}, the reference {ref.shape}")
    rows_ours = ours.reshape(-1, ours.shape[-1]) if ours.ndim else ours.reshape(1, 1)   # [n, last]
    rows_ref = ref.reshape(rows_ours.shape)
    step = max(1, CHUNK_ELEMENTS // rows_ours.shape[1])
    max_abs = scale = dot = sum_sq_ours = sum_sq_ref = 0.0
    for start in range(0, rows_ours.shape[0], step):
        o = rows_ours[start:start + step].astype(np.float64)
        r = rows_ref[start:start + step].astype(np.float64)
        if not (np.isfinite(o).all() and np.isfinite(r).all()):
            return PlaceDiff(name, ref.shape, math.inf, math.inf, math.nan, False)
        max_abs = max(max_abs, float(np.abs(o - r).max()))
        scale = max(scale, float(np.abs(r).max()))
        dot += float(np.vdot(o, r))
        sum_sq_ours += float(np.vdot(o, o))
        sum_sq_ref += float(np.vdot(r, r))
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    norms = math.sqrt(sum_sq_ours * sum_sq_ref)
    cosine = dot / norms if norms > 0 else float(max_abs == 0)
    return PlaceDiff(name, ref.shape, max_abs, max_rel, cosine, max_rel <= tolerance)


def top_k_agreement(ours, ref, k):
    """Fraction of positions whose k most likely next tokens are the same set. logits [..., v]."""
    ours, ref = ours.reshape(-1, ours.shape[-1]), ref.reshape(-1, ref.shape[-1])   # [n, v]
    k = min(k, ours.shape[-1])
    if k == 1:
        return float((ours.argmax(-1) == ref.argmax(-1)).mean())
    top_ours = np.sort(np.argpartition(-ours, k - 1, axis=-1)[:, :k], axis=-1)     # [n, k]
    top_ref = np.sort(np.argpartition(-ref, k - 1, axis=-1)[:, :k], axis=-1)
    return float((top_ours == top_ref).all(-1).mean())


@dataclass
class VerifyReport:
    """The result of ``compare``: one PlaceDiff per place, next-token agreement, PASS or FAIL."""
    places: list
    tolerance: float
    top1: float                     # fraction of positions where the most likely next token agrees
    top5: float                     # fraction where the 5 most likely next tokens are the same set
    n_positions: int
    ours: str = "minigpt2"
    reference: str = "reference"
    has_traces: bool = True

    @property
    def passed(self):
        return all(place.ok for place in self.places)

    @property
    def first_failure(self):
        """The first place (forward order) whose error is over the tolerance, or None."""
        return next((place for place in self.places if not place.ok), None)

    @property
    def last_fine(self):
        """The last place within tolerance before the first failure (None if the first one fails);
        with no failure, the last place."""
        fine = None
        for place in self.places:
            if not place.ok:
                break
            fine = place
        return fine

    def __getitem__(self, name):
        for place in self.places:
            if place.name == name:
                return place
        raise KeyError(f"no place {name!r} in this report")

    def __str__(self):
        lines = [f"ours:      {self.ours}", f"reference: {self.reference}",
                 f"tolerance: {self.tolerance:.1e} on max|ours - ref| / max|ref|"]
        if not self.has_traces:
            lines.append("(the reference has no traces: comparing hidden states and logits only)")
        width = max(len(p.name) for p in self.places)
        shape_width = max(len(str(list(p.shape))) for p in self.places)
        lines.append("")
        lines.append(f"{'place':<{width}}  {'shape':<{shape_width}}  {'max abs diff':>12}  "
                     f"{'max rel diff':>12}  {'cosine sim':>12}")
        previous_group = None
        for p in self.places:
            group = "head" if p.name in ("ln_f", "logits") else layer_of(p.name)
            if previous_group is not None and group != previous_group:
                lines.append("")                       # a blank line between layers
            previous_group = group
            lines.append(f"{p.name:<{width}}  {str(list(p.shape)):<{shape_width}}  {p.max_abs:>12.3e}  "
                         f"{p.max_rel:>12.3e}  {p.cosine:>12.9f}  {'ok' if p.ok else 'OVER'}")
        lines.append("")
        first, fine = self.first_failure, self.last_fine
        if first is None:
            lines.append(f"every place is within tolerance (largest relative error "
                         f"{max(p.max_rel for p in self.places):.2e}, at "
                         f"{max(self.places, key=lambda p: p.max_rel).name})")
        else:
            lines.append(f"first place over tolerance: {first.name} (max rel diff {first.max_rel:.2e})")
            lines.append("last place still fine:      "
                         + (fine.name if fine else "(none: the first place differs)"))
            if first.name == "embed":
                lines.append("(the embeddings differ before any computation: are the wte / wpe weights "
                             "the reference's?)")
        lines.append(f"next-token predictions over {self.n_positions} positions: top-1 agree "
                     f"{100 * self.top1:.1f}%, top-{TOP_K} sets agree {100 * self.top5:.1f}%")
        lines.append("PASS" if self.passed else "FAIL")
        return "\n".join(lines)

    def plot(self, path):
        """Save the relative error of every place to ``path`` (a .png): log scale, one colour per
        kind of sub-step, the tolerance as a dashed line. An exact 0 is drawn at the bottom."""
        from matplotlib.figure import Figure     # no pyplot: no display and no global backend needed

        errors = np.array([p.max_rel for p in self.places], dtype=np.float64)
        finite = errors[np.isfinite(errors) & (errors > 0)]
        floor = min(finite.min() if finite.size else self.tolerance, self.tolerance) / 10
        ceiling = max(finite.max() if finite.size else self.tolerance, self.tolerance) * 10
        shown = np.clip(np.nan_to_num(errors, nan=ceiling, posinf=ceiling), floor, ceiling)  # log axis: no 0
        steps = [p.name.rsplit(".", 1)[-1] for p in self.places]     # ln_1, attn, ..., embed, ln_f, logits
        x = np.arange(len(self.places))
        fig = Figure(figsize=(max(6.0, min(16.0, 0.12 * len(x) + 4)), 4.5))
        ax = fig.subplots()
        ax.plot(x, shown, color="0.7", linewidth=1, zorder=1)
        for step in dict.fromkeys(steps):                 # one colour per kind of sub-step
            at = [i for i, s in enumerate(steps) if s == step]
            ax.scatter(x[at], shown[at], s=18, label=step, zorder=2)
        ax.axhline(self.tolerance, color="red", linestyle="--", linewidth=1, label="tolerance")
        first = self.first_failure
        if first is not None:
            at = self.places.index(first)
            ax.axvline(at, color="red", linewidth=0.8, alpha=0.6)
            ax.annotate(f"first over: {first.name}", (at, shown[at]), textcoords="offset points",
                        xytext=(5, 5), color="red", fontsize=8)
        block_start = ".ln_1" if self.has_traces else ".out"    # one label per block
        ticks = [i for i, p in enumerate(self.places)
                 if not p.name.startswith("h.") or p.name.endswith(block_start)]
        ticks = ticks[::max(1, len(ticks) // 30)]           # at most ~30 labels
        ax.set_xticks(ticks)
        ax.set_xticklabels([layer_of(self.places[i].name) for i in ticks], rotation=90, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("max|ours - ref| / max|ref|")
        ax.set_title(f"{'PASS' if self.passed else 'FAIL'}: {self.ours}\nvs {self.reference}", fontsize=8)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        fig.savefig(path, dpi=120)
