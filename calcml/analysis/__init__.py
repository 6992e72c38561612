"""Convergence theory as code (chapter section 9.1).

The constants of the theory, estimated from Hessian-vector products without forming the
Hessian (:func:`estimate_L`, :func:`estimate_mu`, :func:`recommend_learning_rate`); the rates
it predicts, held against what a run of :func:`calcml.optimize.minimize` measured
(:func:`check_linear_rate` ‖x_k − x*‖ ≤ (1 − αμ)^k ‖x₀ − x*‖, :func:`check_convex_rate`
f(x_k) − f* ≤ L‖x₀ − x*‖²/(2k), :func:`check_sgd_bound` E[f(θ_k) − f*] ≤ (R² + σ²)/(2αk));
and the Robbins–Monro conditions of a step-size schedule (:func:`robbins_monro`).  Every check
returns a small dataclass with the predicted and the observed numbers side by side.
"""

from .problems import Quadratic, make_quadratic
from .rates import (
    ConvexRateCheck,
    GDAnalysis,
    LinearRateCheck,
    analyze_gradient_descent,
    check_convex_rate,
    check_linear_rate,
    contraction_factor,
)
from .schedules import RobbinsMonroCheck, robbins_monro
from .sgd import SGDBoundCheck, check_sgd_bound, gradient_variance
from .spectrum import (
    EigenEstimate,
    HessianOperator,
    estimate_L,
    estimate_mu,
    recommend_learning_rate,
)

__all__ = [
    "EigenEstimate", "HessianOperator", "estimate_L", "estimate_mu", "recommend_learning_rate",
    "LinearRateCheck", "ConvexRateCheck", "GDAnalysis", "check_linear_rate", "check_convex_rate",
    "contraction_factor", "analyze_gradient_descent",
    "SGDBoundCheck", "check_sgd_bound", "gradient_variance",
    "RobbinsMonroCheck", "robbins_monro",
    "Quadratic", "make_quadratic",
]
