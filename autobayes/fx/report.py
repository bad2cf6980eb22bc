"""`ConversionReport`: what :func:`autobayes.bayesify` converted, what it left deterministic, and why."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = ["LayerRecord", "TieRecord", "ConversionReport"]


@dataclass
class LayerRecord:
    """One layer (or one functionally used parameter) the conversion looked at.

    Attributes:
        name: qualified name in the model (``"features.0"``; a functionally used parameter's owner module).
        type: class name of the deterministic module.
        status: ``"bayesian"`` or ``"skipped"`` (left deterministic; ``reason`` says why).
        how: how it was converted: ``"layer"`` (swapped for its Bayesian twin, e.g. ``BayesConv2d``),
            ``"attribute"`` (the module keeps its own forward; its ``weight`` / ``bias`` attributes now return
            posterior samples), ``"functional"`` (a raw parameter read in the traced graph feeding
            ``F.linear`` / ``F.conv*`` / ``matmul`` became a posterior sample), or ``""``.
        params: names of the converted (or skipped) parameters, e.g. ``["weight", "bias"]``.
        n_params: number of deterministic parameters involved.
        n_bayes_params: number of variational parameters that replace them (``mu`` and ``log_var``: 2x for the
            location-scale families; ``W`` and the factors' ``K x (d0 + d1)`` means and log-variances for rank-1).
        used: whether the traced forward uses it (its KL is part of ``kl``); ``None`` when unknown (swap mode
            counts the layers a forward calls, at run time).
        reason: why it was skipped, or a note (e.g. ``"inside leaf module 'blocks.0' (ConvMlp)"``).
    """

    name: str
    type: str
    status: str
    how: str = ""
    params: List[str] = field(default_factory=list)
    n_params: int = 0
    n_bayes_params: int = 0
    used: Optional[bool] = None
    reason: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TieRecord:
    """One tensor shared by several modules (see :mod:`autobayes.fx.ties`).

    Attributes:
        names: its qualified parameter names, e.g. ``["transformer.wte.weight", "lm_head.weight"]``.
        decision: ``"shared"`` (one posterior read by every owner, one draw per forward) or ``"deterministic"``.
        n_params: number of elements of the tensor.
        reason: why (``"tied='deterministic'"``, ``"owner 'lm_head' matched by exclude pattern 'lm_head'"``, ...).
    """

    names: List[str]
    decision: str
    n_params: int = 0
    reason: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ConversionReport:
    """The outcome of a conversion; ``str(report)`` is a table, :meth:`to_dict` is JSON-ready.

    Attributes:
        model: class name of the converted model.
        mode: ``"fx"`` (traced graph rewritten) or ``"swap"`` (modules swapped in place, KL per forward).
        records: one :class:`LayerRecord` per layer or parameter looked at.
        n_params_total: parameters of the deterministic model.
        notes: messages (why the FX route was not taken, leaf modules, ...).
        ties: one :class:`TieRecord` per tensor shared by several modules (kept tied either way).

    Example:
        >>> report = autobayes.inspect_model(torchvision.models.resnet18())  # doctest: +SKIP
        >>> print(report)  # doctest: +SKIP
        >>> [r.name for r in report.skipped]  # doctest: +SKIP
    """

    model: str
    mode: str
    records: List[LayerRecord] = field(default_factory=list)
    n_params_total: int = 0
    notes: List[str] = field(default_factory=list)
    ties: List[TieRecord] = field(default_factory=list)

    # ------------------------------------------------------------------ views
    @property
    def converted(self) -> List[LayerRecord]:
        return [r for r in self.records if r.status == "bayesian"]

    @property
    def skipped(self) -> List[LayerRecord]:
        return [r for r in self.records if r.status == "skipped"]

    @property
    def n_params_converted(self) -> int:
        """Deterministic parameters that became Bayesian."""
        return sum(r.n_params for r in self.converted)

    @property
    def n_params_bayesian(self) -> int:
        """Variational parameters (``mu`` and ``log_var``) of the Bayesian model."""
        return sum(r.n_bayes_params for r in self.converted)

    @property
    def n_params_deterministic(self) -> int:
        """Parameters that stay deterministic (norms, embeddings, skipped layers, ...)."""
        return self.n_params_total - self.n_params_converted

    def get(self, name: str) -> Optional[LayerRecord]:
        """The record of the layer ``name`` (``None`` when there is none)."""
        for r in self.records:
            if r.name == name:
                return r
        return None

    # ------------------------------------------------------------------ output
    def to_dict(self) -> Dict[str, Any]:
        return {
            "model": self.model,
            "mode": self.mode,
            "n_params_total": self.n_params_total,
            "n_params_converted": self.n_params_converted,
            "n_params_bayesian": self.n_params_bayesian,
            "n_params_deterministic": self.n_params_deterministic,
            "n_converted": len(self.converted),
            "n_skipped": len(self.skipped),
            "records": [r.to_dict() for r in self.records],
            "ties": [t.to_dict() for t in self.ties],
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        header = ("layer", "type", "status", "how", "params", "bayes params", "note")
        rows = [header]
        for r in self.records:
            note = r.reason
            if r.used is False and not note:
                note = "not used by the forward (no KL term)"
            name = r.name or "(the model itself)"  # the root module is itself a converted layer
            rows.append((name, r.type, r.status, r.how, f"{r.n_params:,}", f"{r.n_bayes_params:,}", note))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        lines = [f"autobayes conversion of {self.model} (mode={self.mode})"]
        for i, row in enumerate(rows):
            lines.append(("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1]).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths) + "  ----")
        lines.append(
            f"{len(self.converted)} converted, {len(self.skipped)} skipped; parameters: {self.n_params_total:,} total, "
            f"{self.n_params_converted:,} now Bayesian ({self.n_params_bayesian:,} variational), "
            f"{self.n_params_deterministic:,} deterministic"
        )
        lines.extend(f"tie: {' = '.join(t.names)} ({t.n_params:,} parameters): {t.decision}; {t.reason}"
                     for t in self.ties)
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"ConversionReport(model={self.model!r}, mode={self.mode!r}, converted={len(self.converted)}, "
            f"skipped={len(self.skipped)})"
        )
