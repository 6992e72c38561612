"""Reinforcement learning (chapter 9.7), on calcml's public API.

* :mod:`~calcml.rl.mdp` — finite MDPs as arrays (``TabularMDP.from_gym``), the Bellman
  equation solved exactly and by iteration, value iteration, finite-horizon values;
* :mod:`~calcml.rl.tabular` — Q-learning with ε-greedy exploration, rollouts and evaluation;
* :mod:`~calcml.rl.networks` — MLPs for policies and values, a no-graph forward for acting;
* :mod:`~calcml.rl.policy_gradient` — REINFORCE with a baseline, returns, the surrogate loss;
* :mod:`~calcml.rl.actor_critic` — advantage actor-critic with a TD-trained critic;
* :mod:`~calcml.rl.theorem` — the policy gradient theorem checked on a small MDP whose
  J(θ) the engine differentiates exactly.

Environments are gymnasium's (``"FrozenLake-v1"``, ``"CliffWalking-v1"``,
``"CartPole-v1"``); every random choice comes from an explicit seed.  As in
:mod:`calcml.generative`, a ``seed`` or ``rng`` argument takes an int (or, where documented, a
``numpy.random.Generator``); the defaults are fixed seeds (``seed=0``), ``rl.mlp`` needs its
``rng``, and None — a generator seeded from the operating system — is refused with a
TypeError.  The one exception is ``seed=None`` in ``rollout`` and ``play_episode``, which
continues the stream of an environment already reset with a seed.
"""

from .actor_critic import actor_critic, gae_advantages, td_targets
from .mdp import (
    PolicyEvaluationResult,
    TabularMDP,
    ValueIterationResult,
    bellman_backup,
    finite_horizon_optimum,
    finite_horizon_value,
    greedy_policy,
    policy_evaluation_exact,
    policy_evaluation_iterative,
    policy_matrix,
    q_from_v,
    value_iteration,
)
from .networks import NumpyForward, mlp
from .policy_gradient import (
    EpisodeBatch,
    PolicyGradientResult,
    discounted_returns,
    moving_average,
    play_episode,
    reinforce,
    reinforce_loss,
)
from .tabular import (
    EvaluationResult,
    QLearningResult,
    Trajectory,
    epsilon_greedy,
    evaluate_policy,
    q_learning,
    q_learning_update,
    rollout,
)
from .theorem import (
    ESTIMATORS,
    EstimatorCheck,
    PolicyGradientCheck,
    exact_objective,
    exact_policy_gradient,
    policy_gradient_check,
    random_episodic_mdp,
    sample_gradients,
    softmax_policy,
    solve,
)

__all__ = [
    # MDPs and the Bellman equation
    "TabularMDP", "PolicyEvaluationResult", "ValueIterationResult", "policy_matrix",
    "bellman_backup", "policy_evaluation_exact", "policy_evaluation_iterative",
    "value_iteration", "q_from_v", "greedy_policy", "finite_horizon_value",
    "finite_horizon_optimum",
    # tabular Q-learning
    "QLearningResult", "Trajectory", "EvaluationResult", "q_learning", "q_learning_update",
    "epsilon_greedy", "rollout", "evaluate_policy",
    # networks
    "mlp", "NumpyForward",
    # policy gradients
    "PolicyGradientResult", "EpisodeBatch", "reinforce", "reinforce_loss",
    "discounted_returns", "moving_average", "play_episode",
    "actor_critic", "td_targets", "gae_advantages",
    # the policy gradient theorem
    "random_episodic_mdp", "softmax_policy", "solve", "exact_objective",
    "exact_policy_gradient", "sample_gradients", "EstimatorCheck", "PolicyGradientCheck",
    "policy_gradient_check", "ESTIMATORS",
]
