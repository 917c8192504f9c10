"""Config of an SPD run: target, decomposition, loss coefficients, optimisation, evaluation."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tunelens.config import Schedule, TunelensConfig
from tunelens.spd.ci import CiFnType
from tunelens.spd.sigmoids import SigmoidType
from tunelens.spd.targets.lm import LmTargetConfig
from tunelens.spd.targets.resid_mlp import ResidMlpTargetConfig
from tunelens.spd.targets.tms import TmsTargetConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LossCoeffs(_Section):
    """Coefficient of each loss term in the total; 0 switches a term off."""

    faithfulness: NonNegativeFloat = Field(0.0, description="Mean squared weight error W − ΣUV.")
    stochastic_recon: NonNegativeFloat = Field(1.0, description="Output loss with every layer stochastically masked.")
    stochastic_recon_layerwise: NonNegativeFloat = Field(1.0, description="Output loss, one masked layer at a time.")
    stochastic_recon_subset: NonNegativeFloat = Field(0.0, description="Output loss, a random subset of layers.")
    importance_minimality: NonNegativeFloat = Field(3e-3, description="Sparsity penalty Σ (g + ε)^p.")
    ci_masked_recon: NonNegativeFloat = Field(0.0, description="Output loss with the importances as masks.")
    pgd_recon: NonNegativeFloat = Field(0.0, description="Output loss under adversarially chosen masks.")


class ImportanceMinimality(_Section):
    p: PositiveFloat = Field(1.0, description="Exponent p of the penalty (at the start of annealing).")
    p_final: PositiveFloat | None = Field(None, description="Exponent after annealing; null = no annealing.")
    p_anneal_start_frac: float = Field(0.0, ge=0, le=1, description="Training fraction where annealing starts.")
    p_anneal_end_frac: float = Field(1.0, ge=0, le=1, description="Training fraction where annealing ends.")
    eps: NonNegativeFloat = Field(1e-12, description="Added to g before the power (keeps p < 1 finite).")
    coeff_schedule: Schedule = Field(default_factory=Schedule, description="Shape of the penalty's coefficient "
                                     "over training, peaking at loss.importance_minimality (e.g. {warmup_frac: 0.2}: "
                                     "a linear warm-up from 0); default constant.")

    @model_validator(mode="after")
    def _ordered(self) -> ImportanceMinimality:
        if self.p_anneal_end_frac < self.p_anneal_start_frac:
            raise ValueError("p_anneal_end_frac must be ≥ p_anneal_start_frac")
        return self


class Pgd(_Section):
    n_steps: PositiveInt = Field(1, description="Signed-gradient ascent steps on the mask sources.")
    step_size: PositiveFloat = Field(1.0, description="Ascent step size (sources live in [0, 1]).")
    init: Literal["random", "ones", "zeros"] = Field("random", description="Initial sources.")
    mask_scope: Literal["per_example", "shared"] = Field("per_example", description="One source set per example, "
                                                         "or one shared by the batch.")
    routing: Literal["all", "subset"] = Field("all", description="Every layer under the adversarial masks, or per "
                                              "example a random subset of k ~ U{1..L} layers (the others run as the "
                                              "target), drawn once per step as in the subset loss.")


class Optimization(_Section):
    steps: PositiveInt = Field(10_000, description="Optimisation steps.")
    batch_size: PositiveInt = Field(4096, description="Examples per step.")
    lr: PositiveFloat = Field(1e-3, description="Peak learning rate (AdamW, no weight decay).")
    lr_schedule: Schedule = Field(default_factory=lambda: Schedule(kind="cosine"), description="Learning-rate shape.")
    grad_clip_norm: PositiveFloat | None = Field(None, description="Clip the global gradient norm; null = off.")
    faithfulness_warmup_steps: NonNegativeInt = Field(0, description="Steps fitting ΣUV to W before training.")
    faithfulness_warmup_lr: PositiveFloat = Field(1e-2, description="Learning rate of the warm-up.")
    faithfulness_warmup_weight_decay: NonNegativeFloat = Field(0.1, description="Weight decay of the warm-up.")


class Evaluation(_Section):
    every: PositiveInt = Field(1000, description="Evaluate (and log eval metrics) every this many steps.")
    log_every: PositiveInt = Field(100, description="Log training losses every this many steps.")
    batch_size: PositiveInt = Field(4096, description="Examples in the evaluation batch.")
    ci_alive_threshold: float = Field(0.1, ge=0, le=1, description="Importance above which a subcomponent is on.")
    large_norm_frac: float = Field(0.1, gt=0, le=1, description="n_large counts subcomponents whose norm is at "
                                   "least this fraction of the layer's largest.")
    pattern_tolerance: float = Field(0.1, ge=0, le=0.5, description="Tolerance of the one-hot pattern errors.")


TargetConfig = Annotated[TmsTargetConfig | ResidMlpTargetConfig | LmTargetConfig, Field(discriminator="kind")]


class SpdConfig(TunelensConfig):
    """Stochastic Parameter Decomposition of a target model's chosen layers."""

    target: TargetConfig = Field(default_factory=TmsTargetConfig, description="The model to decompose.")
    C: PositiveInt | dict[str, PositiveInt] = Field(20, description="Subcomponents per decomposed matrix, or per "
                                                     "module name.")
    ci_fn_type: CiFnType = Field("mlp", description="Causal-importance function type.")
    ci_fn_hidden: list[PositiveInt] = Field(default_factory=lambda: [16], description="Hidden widths of the CI fns.")
    sigmoid_type: SigmoidType = Field("leaky_hard", description="Hard sigmoid of the importances.")
    tie_components: bool = Field(True, description="Layers whose target weights are transposes of each other "
                                 "(TMS linear1, linear2) share one set of subcomponents.")
    use_delta_component: bool = Field(False, description="Add W − ΣUV as an extra randomly masked component.")
    n_mask_samples: PositiveInt = Field(1, description="Stochastic mask draws per reconstruction loss.")
    loss: LossCoeffs = Field(default_factory=LossCoeffs)
    importance_minimality: ImportanceMinimality = Field(default_factory=ImportanceMinimality)
    pgd: Pgd = Field(default_factory=Pgd)
    optim: Optimization = Field(default_factory=Optimization)
    eval: Evaluation = Field(default_factory=Evaluation)
    save_checkpoint: bool = Field(True, description="Write components.safetensors at the end.")

    @field_validator("C")
    @classmethod
    def _components_name_decomposed_modules(cls, C: int | dict[str, int], info: ValidationInfo
                                            ) -> int | dict[str, int]:
        target = info.data.get("target")
        if isinstance(C, dict) and target is not None and set(C) != set(target.module_names()):
            raise ValueError(f"give a count for exactly the decomposed modules {target.module_names()}, "
                             f"got {sorted(C)}")
        return C

    def components_per_module(self) -> dict[str, int]:
        names = self.target.module_names()
        return {name: self.C for name in names} if isinstance(self.C, int) else {name: self.C[name] for name in names}
