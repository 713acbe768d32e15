"""torch's Adam with the two settings that IWAE's code (yburda/iwae ``optimizers.py``) has and
torch's constructor lacks: a second-moment estimate that starts above zero, and the scale of the
loss it was tuned on.

Adam (Kingma & Ba 2015, Algorithm 1) with gradient g_t:

    m_t = b1 m_{t-1} + (1 - b1) g_t,          v_t = b2 v_{t-1} + (1 - b2) g_t^2,
    theta_t = theta_{t-1} - lr m_t / (1 - b1^t) / (sqrt(v_t / (1 - b2^t)) + eps).

torch starts m_0 = v_0 = 0. IWAE's code starts v_0 = 1, which damps the first steps: v_t stays
near b2^t, above g^2, until b2^t falls to g^2 (for |g| = 0.1, about 4,600 steps: two epochs of
MNIST in batches of 20).

Its loss is also the minibatch's *sum* of the bound, where vibench's is the mean: every gradient
is B times vibench's. Adam is invariant to the scale c of the gradients except through eps and
v_0 (m scales by c, v by c^2, so m / (sqrt(v) + eps) is unchanged when eps and sqrt(v_0) scale by
c too). So Adam on c g with (eps, v_0) takes exactly the steps of Adam on g with
(eps / c, v_0 / c^2): ``loss_scale=c`` gives those, and eps and v_0 keep the values written in
the code.

Left different from that code: its update uses the moments before the step's gradient (a Theano
simultaneous update: theta_t moves by m_{t-1}, one step late), and it divides by sqrt(v_t) + eps
with the bias corrections all in the step size, where torch's update amounts to
sqrt(v_t) + eps sqrt(1 - b2^t) there (the two agree once b2^t ~ 0, after about 5,000 steps).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class Adam(torch.optim.Adam):
    """torch's Adam (every argument of :class:`torch.optim.Adam`), plus:

    Args:
        initial_second_moment: v_0, where the second-moment estimate starts (torch: 0; IWAE's
            code: 1), in the units of the gradients of a loss ``loss_scale`` times this one's.
        loss_scale: c > 0. Behave as Adam would on the loss times c: eps becomes eps / c and
            v_0 becomes v_0 / c^2 (exact: the module docstring). IWAE's code sums the bound over
            its minibatch of 20 where vibench averages, so c = 20 reproduces its eps = 1e-4.

    The seeded state is made at a parameter's first step, as torch makes its own, so a state
    loaded from a checkpoint (``load_state_dict``) is used as it is.
    """

    def __init__(self, params, lr: float | torch.Tensor = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, *, initial_second_moment: float = 0.0, loss_scale: float = 1.0, **kwargs):
        if not loss_scale > 0:
            raise ValueError(f"loss_scale={loss_scale} must be > 0: Adam then steps as on the loss times loss_scale (the batch size, for a loss summed over the minibatch)")
        if initial_second_moment < 0:
            raise ValueError(f"initial_second_moment={initial_second_moment} must be >= 0: it starts an average of squared gradients")
        if kwargs.get("amsgrad") and initial_second_moment:
            raise ValueError("initial_second_moment with amsgrad=true is not supported: choose one")
        super().__init__(params, lr=lr, betas=betas, eps=eps / loss_scale, **kwargs)
        self.initial_second_moment = initial_second_moment / loss_scale**2

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        if self.initial_second_moment:
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None and not self.state[p]:
                        self.state[p] = self._seeded_state(p, group)
        return super().step(closure)

    def _seeded_state(self, p: torch.Tensor, group: dict) -> dict:
        """The state torch's Adam makes at a parameter's first step, with v_0 in place of 0."""
        on_device = group["capturable"] or group["fused"]
        scalar = torch.float64 if torch.get_default_dtype() == torch.float64 and not group["fused"] else torch.float32
        return {
            "step": torch.zeros((), dtype=scalar, device=p.device if on_device else "cpu"),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.full_like(p, self.initial_second_moment, memory_format=torch.preserve_format),
        }
